"""Notebook 8's pieces: which task belongs to which story, and the exercise on the
units a killed worker kept out of reach until its leases lapsed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from storylab.tutorial._verdict import Verdict, missing

__all__ = ["check_out_of_reach", "check_regained", "cluster_labels", "mark_window",
           "start_stagger", "story_of_task", "widest_gap"]


def story_of_task(futures: Iterable[Any]) -> dict[str, str]:
    """``{task key: pipeline name}`` for the futures ``submit_stories`` returned (its
    keys read ``story-<pipeline name>-<8 hex digits>``)."""
    out = {}
    for future in futures:
        key = str(future.key)
        if not key.startswith("story-") or key[-9:-8] != "-":
            raise ValueError(f"task key {key!r} was not made by submit_stories")
        out[future.key] = key[len("story-"):-9]
    return out


def _held(series: Sequence[tuple[float, int]], start: float, end: float) -> list[int]:
    """The values a step series takes in ``[start, end)``: the one in force at
    ``start`` (the last step before it) and every step inside."""
    before = [v for t, v in series if t < start][-1:]
    return before + [v for t, v in series if start <= t < end]


def check_out_of_reach(answer: Any, *, series: Sequence[tuple[float, int]], killed: float,
                       lapsed: float, global_limit: int) -> Verdict:
    """Exercise: between the kill and the lapse of the dead worker's leases, how many of
    the ``global_limit`` units were out of the survivors' reach, read from the
    survivors' global series ``[(model s, units held), ...]``: the limit minus the
    most they held at once in that window."""
    if (v := missing(answer)) is not None:
        return v
    if not series or not killed < lapsed:
        raise ValueError("series must hold (model s, units) steps, with killed < lapsed")
    if isinstance(answer, bool) or not isinstance(answer, int | float):
        return Verdict(False, f"answer with a number of units, not {answer!r}")
    held = _held(series, killed, lapsed)
    if not held:
        return Verdict(False, "the series has no step before the lapse: was it the second run's?")
    expected = global_limit - max(held)
    if answer == expected:
        return Verdict(True, f"{expected} of {global_limit}: the survivors held at most "
                             f"{max(held)} between the kill ({killed:.1f} model s) and the "
                             f"lapse ({lapsed:.1f}); the rest still counted as the dead "
                             "worker's on the scheduler")
    inside = [v for t, v in series if killed <= t < lapsed]
    if inside and answer == global_limit - max(inside) and max(inside) != max(held):
        return Verdict(False, "close: a step holds its value until the next one, so the value "
                              "in force at the kill (the last step before it) counts too")
    if answer == max(held):
        return Verdict(False, "that is what the survivors held at most; the question asks "
                              "how many units they could not reach")
    after = [v for t, v in series if t >= lapsed]
    if after and answer == global_limit - max(after):
        return Verdict(False, "that is after the lapse; keep only the steps between the kill "
                              "and the lapse")
    return Verdict(False, "take the survivors' most units held between `killed` and `lapsed`, "
                          "and subtract it from the global limit")


def check_regained(answer: Any, *, series: Sequence[tuple[float, int]], killed: float,
                   lapse_from: float, lapse_by: float, global_limit: int) -> Verdict:
    """Exercise: the model second at which the survivors' global line first holds the
    whole ``global_limit`` again after the kill, measured from ``series`` (``[(model s,
    units held), ...]``); the verdict then says whether it falls in the window
    ``[lapse_from, lapse_by]`` predicted from the lease timeout."""
    if (v := missing(answer)) is not None:
        return v
    if not series or not killed <= lapse_from <= lapse_by:
        raise ValueError("series must hold (model s, units) steps, with "
                         "killed <= lapse_from <= lapse_by")
    if isinstance(answer, bool) or not isinstance(answer, int | float):
        return Verdict(False, f"answer with a time in model seconds, not {answer!r}")
    full = [t for t, v in series if t >= killed and v >= global_limit]
    if not full:
        return Verdict(False, f"in this run the survivors never held all {global_limit} units "
                              "after the kill, so there is nothing to measure: by the time the "
                              f"leases lapsed ({lapse_from:.1f} to {lapse_by:.1f} model s) too "
                              "few pictures were left to fill the limit; shorten "
                              "`lease_timeout` or run more `stories`, then run the notebook "
                              "again")
    expected = full[0]
    if abs(answer - expected) <= 1e-9:
        where = ("inside" if lapse_from <= expected <= lapse_by else "OUTSIDE")
        return Verdict(True, f"{expected:.1f} model s, {expected - killed:.1f} after the kill: "
                             f"{where} the window {lapse_from:.1f} to {lapse_by:.1f} predicted "
                             "from the lease timeout; only once the dead worker's leases "
                             "lapsed could the survivors hold the whole limit")
    named = {lapse_from: "the start of the predicted window, a prediction",
             lapse_by: "the end of the predicted window, a prediction",
             killed: "the kill itself, when the units were lost"}
    for t, what in named.items():
        if abs(answer - t) <= 1e-9:
            return Verdict(False, f"that is {what}; the question asks when the line got them "
                                  "back: measure it from `series`")
    at = {t: v for t, v in series}
    if answer in at and answer < killed and at[answer] >= global_limit:
        return Verdict(False, "the line is at the limit there, but that is before the kill; "
                              "keep only the steps from `killed` on")
    if answer in at and answer > expected and at[answer] >= global_limit:
        return Verdict(False, "the line is at the limit there, but it got there earlier: "
                              "the question asks for the first step that reaches it")
    if answer in at and at[answer] < global_limit:
        return Verdict(False, f"at {answer:.1f} model s the survivors hold {at[answer]}, not "
                              f"yet {global_limit}: a step counts once its units reach the limit")
    if isinstance(answer, int) and 0 <= answer < len(series) and series[answer][0] == expected:
        return Verdict(False, "that is the step's position in `series`; give its time, the "
                              "first number of the pair")
    if abs(answer - expected) < 1.0:
        return Verdict(False, "close, but not the time of a step in `series`: take the time "
                              "exactly as the series gives it, unrounded")
    return Verdict(False, "go through `series` from the kill on and take the time of the first "
                          "step whose units reach the global limit")



def check_lapse_window(lapse_window: Any, *, lease_timeout: float | None = None,
                       kill_scale: float | None = None,
                       killed: float | None = None) -> Verdict:
    """Exercise: ``lapse_window(T, renew=10, check=4)`` returns ``(earliest, latest)``, the
    wall seconds after a worker's death between which the scheduler takes back its leases,
    for a lease timeout ``T`` renewed ``renew`` times per timeout and looked for ``check``
    times per timeout: it ends between ``T - T/renew`` and ``T`` after the death, and is
    taken back up to ``T/check`` after it ends. Checked for several timeouts and rates (so
    numbers learnt by heart for one rate do not pass), without ever telling the expected
    value; with ``lease_timeout`` and ``kill_scale`` the verdict gives this run's window in
    model seconds after the kill, and with ``killed`` (the kill's model time) also where
    the chart shades it, rounded the same way as the chart's label."""
    if (v := missing(lapse_window)) is not None:
        return v
    if not callable(lapse_window):
        return Verdict(False, "pass your function itself, lapse_window")
    for T, renew, check in ((1.5, 10, 4), (4.0, 5, 2), (10.0, 8, 3), (6.0, 10, 4)):
        try:
            got = lapse_window(T, renew=renew, check=check)
        except TypeError as exc:
            if "renew" in str(exc) or "check" in str(exc) or "argument" in str(exc):
                return Verdict(False, f"lapse_window({T:g}, renew={renew}, check={check}) "
                                      f"raised TypeError: {exc}. Keep the signature "
                                      "lapse_window(T, renew=10, check=4)")
            return Verdict(False, f"lapse_window({T:g}, renew={renew}, check={check}) raised "
                                  f"TypeError: {exc}")
        except Exception as exc:
            return Verdict(False, f"lapse_window({T:g}, renew={renew}, check={check}) raised "
                                  f"{type(exc).__name__}: {exc}")
        call = f"lapse_window({T:g}, renew={renew}, check={check})"
        if got is ...:
            return Verdict(False, "lapse_window still returns ... (the placeholder): return a "
                                  "pair (earliest, latest)")
        try:
            early, late = (float(x) for x in got)
        except (TypeError, ValueError):
            return Verdict(False, f"{call} gave {got!r}: return a pair of numbers, "
                                  "(earliest, latest)")
        call = f"{call} gave ({early:g}, {late:g})"

        def near(x: float, y: float) -> bool:
            return abs(x - y) < 1e-6

        if not near(early, T - T / renew):
            if near(early, T):
                why = ("the lease does not start its countdown at the death: it was renewed "
                       "last up to T/renew before, so it can end that much sooner than T")
            elif near(early, 0):
                why = "a lease still runs for a while after its owner dies: until it expires"
            elif near(early, 0.9 * T) or near(early, 1.25 * T):
                why = ("a number learnt for one rate (a renewal every tenth of T) does not hold "
                       "for others: write the earliest with T and renew")
            else:
                why = ("the earliest is when a lease renewed one renewal interval (T/renew) "
                       "before the death ends")
            return Verdict(False, f"{call}; the earliest is not right: {why}")
        if not near(late, T + T / check):
            if near(late, T):
                why = ("the scheduler does not notice an expired lease at once: it looks for "
                       "them only every T/check, so add that to the latest end")
            elif near(late, T - T / renew + T / check):
                why = ("the latest end is T after the death (a lease renewed just before it), "
                       "and the check can come T/check after that")
            elif near(late, 1.25 * T):
                why = ("a number learnt for one rate (a check every quarter of T) does not hold "
                       "for others: write the latest with T and check")
            else:
                why = "the latest end of the lease, plus the longest wait for the next check"
            return Verdict(False, f"{call}; the latest is not right: {why}")
    here = ""
    if lease_timeout and kill_scale:
        early, late = 0.9 * lease_timeout / kill_scale, 1.25 * lease_timeout / kill_scale
        here = (f"; with this notebook's {lease_timeout:g} s lease (renew=10, check=4), at "
                f"{kill_scale:g} wall s per model second, that is {early:.2f} to {late:.2f} "
                "model s after the kill")
        if killed is not None:
            here += (f", from {killed + early:.1f} to {killed + late:.1f} model s on the "
                     "chart's clock: its shaded band")
        else:
            here += ": the shaded band of the chart"
    return Verdict(True, "T - T/renew to T + T/check: the lease ends between T - T/renew "
                         "(renewed one interval before the death) and T, and the scheduler, "
                         "looking every T/check, takes it back by T + T/check at the latest"
                         f"{here}")


def mark_window(fig: Any, start: float, end: float, label: str) -> Any:
    """Shade ``[start, end]`` (model s) on every panel of a :func:`~storylab.viz.plot_capacity`
    figure and name the band in a legend on the top panel; returns ``fig``."""
    from matplotlib.patches import Patch

    from storylab.viz._palette import OKABE_ITO

    if not start <= end:
        raise ValueError(f"start must not be after end, got {start!r} > {end!r}")
    colour = OKABE_ITO["reddish purple"]
    for ax in fig.axes:
        ax.axvspan(start, end, color=colour, alpha=0.25, lw=0, zorder=0,
                   gid="window")
    band = Patch(facecolor=colour, alpha=0.25, label=label)
    # Above the top panel, at its right (its title sits at the left): outside the axes, so it
    # hides no line and needs no extra height, and the panel keeps its y-axis.
    fig.axes[0].legend(handles=[band], loc="lower right", bbox_to_anchor=(1.0, 1.0),
                       fontsize=9, frameon=False, borderaxespad=0.2)
    return fig


def cluster_labels(run: Any, *, marked: str | Iterable[str] | None = None,
                   note: str = "its worker killed") -> dict[str, str]:
    """Chart names for a cluster run's stories, ``{"story:<pipeline>": "story A (a fox)"}``.

    Letters follow the order of the topics as they were submitted (``run.stories``), so
    the same animal keeps its letter from one run to the next, whichever story
    started first; the words are each topic without the ending all topics share. The
    story whose pipeline is ``marked`` (or every story whose pipeline is in ``marked``,
    given several) gets ``note`` in its name."""
    topics = {f"story:{s.pipeline}": s.topic for s in run.stories}
    ending = _shared_ending(list(topics.values()))
    order = list(topics)  # the submission order: the letters do not depend on the run
    noted = {marked} if isinstance(marked, str) else set(marked or ())
    labels = {}
    for group, letter in zip(order, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", strict=False):
        words = topics[group][:len(topics[group]) - len(ending)].strip() or topics[group]
        if group.removeprefix("story:") in noted:
            words = f"{words}, {note}"
        labels[group] = f"story {letter} ({words})"
    return labels


def _shared_ending(topics: list[str]) -> str:
    if len(topics) < 2:
        return ""
    ending = topics[0]
    for topic in topics[1:]:
        while not topic.endswith(ending):
            ending = ending[1:]
    return ending[ending.find(" "):] if " " in ending else ""  # whole words only


class Gap(NamedTuple):
    """Two stories furthest apart: at ``t`` the story ``behind`` held ``has`` units with a
    picture waiting, ``ahead`` held ``holds``; ``behind`` got more than ``has`` only at
    ``until`` (model s)."""

    t: float
    behind: str
    has: int
    ahead: str
    holds: int
    until: float


def widest_gap(trace: Any, names: dict[str, str], *, least: float = 2.0) -> Gap | None:
    """The moment two stories were furthest apart while the one behind still had pictures
    waiting for a unit, and how long the one behind stayed that low, names as in
    ``names``. Only gaps that last ``least`` model seconds count (a unit handed
    from one picture to the next leaves blips of no length)."""
    from storylab.viz import timeline_lanes
    from storylab.viz.timeline import capacity_series

    lanes = [lane for lane in timeline_lanes(trace) if lane.group in names]
    lines = {line.name: line.points for line in capacity_series(trace) if line.name in names}
    changes = sorted({t for points in lines.values() for t, _ in points})
    # Sample where a story line changes and where a picture starts waiting: a wait that
    # begins between two changes is a moment of its own (the lines hold still, but a
    # story is now behind).
    times = sorted(set(changes) | {lane.wait[0] for lane in lanes if lane.wait})

    def held(group: str, t: float) -> int:
        return ([v for u, v in lines.get(group, ()) if u <= t] or [0])[-1]

    def waiting(group: str, t: float) -> bool:
        return any(lane.group == group and lane.wait and lane.wait[0] <= t < lane.wait[1]
                   for lane in lanes)

    best = None
    for t in times:
        following = next((u for u in changes if u > t), None)
        if following is None or following - t < least:
            continue
        now = {g: held(g, t) for g in names}
        behind = [g for g in now if waiting(g, t)]
        if not behind:
            continue
        low = min(behind, key=lambda g: now[g])
        high = max(now, key=lambda g: now[g])
        gap = now[high] - now[low]
        if gap > 0 and (best is None or gap > best[0]):
            until = next((u for u, v in lines.get(low, ()) if u > t and v > now[low]),
                         max(changes))
            best = (gap, Gap(t, names[low], now[low], names[high], now[high], until))
    return best[1] if best else None


class Stagger(NamedTuple):
    """When each story of a run first asked for a unit, in model seconds."""

    first: float
    last: float
    last_story: str
    asked: dict[str, float]


def start_stagger(trace: Any, names: dict[str, str]) -> Stagger:
    """When each story named in ``names`` first asked for a unit (its first picture's
    wait, or its start when it waited for none), and which story asked last: until
    then that story's pictures could not run, whatever the limits allowed."""
    from storylab.viz import timeline_lanes

    asked: dict[str, float] = {}
    for lane in timeline_lanes(trace):
        if lane.group in names:
            t = lane.wait[0] if lane.wait else lane.run[0]
            asked[names[lane.group]] = min(t, asked.get(names[lane.group], t))
    if not asked:
        raise ValueError("no story of names has a picture in this trace")
    last_story = max(asked, key=asked.__getitem__)
    return Stagger(min(asked.values()), asked[last_story], last_story,
                   dict(sorted(asked.items())))


def split_words(moments: Iterable[Any], limit: int) -> tuple[int | None, str]:
    """``(units held, a sentence)`` at the split among ``moments`` (a chart's key moments),
    or ``(None, "")`` without one. Across processes the stories can hold fewer than
    ``limit`` then: a unit still on its way from the scheduler belongs to no story yet."""
    split = next((m for m in moments if m.kind == "split"), None)
    if split is None:
        return None, ""
    held = sum(int(n) for n in split.text.split()[1].split(","))
    said = f"at the split ({split.t:.2f} model s) the stories held {held} of {limit} units"
    if held < limit:
        said += (f"; the other {limit - held} had not reached a story yet (a share comes from "
                 "the scheduler, over the network)")
    return held, said


def unit_sources(trace: Any, share: str) -> dict[str, int]:
    """How each picture of ``trace`` got its unit, from its first capacity event: ``"at
    once"`` from its process's share, after a wait for the ``share`` (the process asked
    the scheduler), or after a wait for its own ``"story"`` limit. ``"unseen"`` counts the
    waits too short for :func:`~storylab.viz.plot_timeline` to draw (it leaves them out
    of its count of waits, so the two counts differ by exactly that)."""
    from storylab.viz import timeline_lanes
    from storylab.viz.timeline import _lanes_end, _visible_wait

    pictures = {(e.runner, e.task_id) for e in trace.of_kind("task_start")}
    how: dict[tuple[str, int], str] = {}
    for e in trace.of_kind("acquire", "wait"):
        if (e.runner, e.task_id) in pictures:
            how.setdefault((e.runner, e.task_id), "at once" if e.kind == "acquire" else
                           "share" if e.level == share else "story")
    lanes = timeline_lanes(trace)
    end = _lanes_end(lanes)
    drawn = sum(1 for lane in lanes
                if (lane.runner, lane.task_id) in how and _visible_wait(lane, end))
    counts = {k: list(how.values()).count(k) for k in ("at once", "share", "story")}
    return {**counts, "pictures": len(how),
            "unseen": counts["share"] + counts["story"] - drawn}
