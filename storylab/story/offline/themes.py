"""The plots of the offline writer, and the subjects it can tell a child about.

A plot is ten *beats*, each told in every story whatever the number of pages
(so everyone is introduced before being named again): a sentence, a detail
for older readers, the *action* a picture of it shows (words for an image
model) and a *frame*: what the drawer needs, written as
``"things | who | time | shot place pose [| setting]"``. ``who`` lists the
characters in the picture, the first one standing where the frame says (H the
hero, F the friend); ``$`` in the things or the setting stands for the
subject's (a volcano and the mountains for "how volcanoes work").

Placeholders in the text: {H} the hero's name, {HI} the hero introduced, {F}
the friend's name, {FI} the friend introduced, {f} the friend's kind, {P} the
place, {hs} the hero's kind, {coat} fur, feathers, scales or coat, {limb} paw,
wing, claw or hand, {Hp} and {Fp} the characters in a picture; in the
discovery plot, {S} the subject ("volcanoes"), {SP} where it is found and
{X1} to {X4} four things to learn about it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SUBJECTS", "THEMES", "Subject", "Theme"]


@dataclass(frozen=True, slots=True)
class Theme:
    name: str  # "sharing"
    words: tuple[str, ...]  # stems that show the theme in the text (tests read them)
    cues: tuple[str, ...]  # topic words that ask for this theme
    friends: tuple[str, ...]  # kinds the friend may be
    places: tuple[str, ...]
    titles: tuple[str, ...]
    morals: tuple[str, ...]
    beats: tuple[tuple[str, str, str], ...]
    setting: str  # where the pictures are, unless a frame says otherwise
    frames: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Subject:
    """Something a topic asks to learn about ("how volcanoes work")."""

    name: str  # how the story says it: "volcanoes"
    cues: tuple[str, ...]  # topic words that name it
    setting: str  # where it is seen
    place: str  # "the mountains, where an old volcano stands"
    things: tuple[str, ...]  # what its pictures show
    facts: tuple[str, str, str, str]
    time: str = "day"


_SHARING = Theme(
    "sharing",
    ("shar",),
    ("share", "shares", "sharing", "shared", "generous", "give", "gives", "giving"),
    ("fox", "rabbit", "bear", "mouse", "hedgehog"),
    ("Clover Meadow", "Buttercup Field", "Honeysuckle Meadow"),
    ("{H} and the Basket of Apples", "{H} Shares the Harvest"),
    (
        "Sharing turns a little into plenty, and a stranger into a friend.",
        "What we share grows bigger: sharing makes one basket enough for everyone.",
    ),
    (
        ("{HI} lived at the edge of {P}, a sunny meadow with an old apple tree in the middle.",
         "Every morning {H} counted the bees that hummed between the flowers.",
         "{Hp} standing in a sunny meadow full of flowers, an apple tree nearby"),
        ("One day the old apple tree dropped its apples, and {H} filled a whole basket.",
         "The apples were red and shiny and smelled of summer.",
         "{Hp} filling a basket with red apples under an apple tree in the meadow"),
        ("'These are all mine,' said {H}, hugging the basket tight.",
         "There were more apples than one small {hs} could ever eat.",
         "{Hp} hugging a basket full of red apples among the flowers"),
        ("Just then {FI} came slowly across the meadow.",
         "{F}'s tummy rumbled as loudly as thunder.",
         "{Hp} holding a basket of apples, meeting {Fp} on a path through the meadow"),
        ("'I have not found a single apple all day,' sighed {F}.",
         "The {f} looked at the basket, then looked politely away.",
         "{Fp} looking sadly at the empty grass while {Hp} holds a basket of apples"),
        ("{H} remembered how it feels to be hungry, and decided to share.",
         "'Here,' said {H}, holding out the basket. 'There are plenty for two.'",
         "{Hp} holding out a basket of red apples to {Fp} on the path"),
        ("They sat under the apple tree and shared the apples, one for {H} and one for {F}.",
         "Sharing made every bite taste sweeter.",
         "{Hp} and {Fp} sitting under an apple tree, sharing a basket of apples"),
        ("When the basket was empty, {F} led {H} to a bush heavy with blackberries.",
         "'You shared with me,' said {F}, 'so now I will share with you.'",
         "{Fp} showing {Hp} a bush full of blackberries at the edge of the meadow"),
        ("Soon the birds brought seeds and the bees brought honey, and all of {P} "
         "had a picnic.",
         "Everyone shared what they had, and nobody went home hungry.",
         "a picnic in a meadow full of flowers: {Hp} and {Fp} sharing apples, "
         "blackberries and honey, birds in the sky"),
        ("That night {H} fell asleep smiling, with the empty basket close by.",
         "A full heart, {H} decided, is better than a full basket.",
         "{Hp} asleep in the meadow beside an empty basket under the moon and stars"),
    ),
    "meadow",
    (
        "apple tree, flowers | H | day | wide left standing",
        "apple tree, basket, apple | H | day | medium centre reaching",
        "basket, apple, flowers | H | day | close centre holding",
        "basket, apple, path | HF | day | wide left walking",
        "basket, apple | FH | day | medium right standing",
        "basket, apple | HF | day | close left holding",
        "apple tree, basket, apple | HF | day | medium centre sitting",
        "blackberries, brambles | FH | dusk | medium right pointing",
        "apple tree, basket, apple, blackberries, flowers | HF | dusk | wide centre sitting",
        "basket, moon, stars | H | night | close centre sleeping",
    ),
)

_COURAGE = Theme(
    "courage",
    ("brave", "courage"),
    ("brave", "bravery", "courage", "courageous", "afraid", "scared", "fear", "fears", "bold",
     "dark"),
    ("rabbit", "mouse", "hedgehog", "duck", "fox"),
    ("Whistling Wood", "Tangleroot Forest", "Hollyhock Wood"),
    ("{H} and the Bramble Path", "{H} Is Brave in the Dark Wood"),
    (
        "Courage is not having no fear; it is doing the kind thing while you are afraid.",
        "Being brave means taking one small step, and then another, even when you are scared.",
    ),
    (
        ("{HI} lived in a little round house at the edge of {P}, where a narrow path wound in "
         "among the tall trees.",
         "{H} liked the wood best in the daytime, when sunlight fell between the leaves.",
         "{Hp} in front of a little round house at the edge of a wood of tall trees"),
        ("Deep in the wood, brambles grew thick across the path, and {H} was afraid of them.",
         "Even the wind seemed to whisper in there.",
         "{Hp} peeking at a dark tangle of brambles beside a path between tall trees"),
        ("One evening {FI} came running out of the trees, crying, because a kite had blown "
         "away over the brambles.",
         "'It was a present from my granny,' sobbed {F}.",
         "{Fp} crying at the edge of the wood while {Hp} listens, tall trees behind"),
        ("{H} trembled, because the brambles were sharp and the path was dark.",
         "But {F} looked so sad that {H} took a deep breath.",
         "{Hp} trembling at the start of a dark path into the brambles, {Fp} beside"),
        ("'Being brave means going even when you are scared,' {H} whispered, and stepped "
         "onto the path.",
         "One step, then another, then another.",
         "{Hp} stepping onto a dark path between brambles and tall trees"),
        ("The brambles tugged at {H}'s {coat}, but {H} kept going, slow and careful.",
         "A night bird called, and {H} called back, which made the fear feel smaller.",
         "{Hp} pushing carefully through thorny brambles on a dark path under the moon"),
        ("Beyond the brambles, by a little river, {H} found the kite caught in a tree.",
         "Its long tail fluttered like a flag.",
         "{Hp} by a little river, reaching for a red kite caught in a tree"),
        ("{H} freed the kite and carried it all the way back along the path.",
         "The way back did not seem half as dark.",
         "{Hp} walking back along a path between brambles, holding a red kite"),
        ("{F} danced with joy. 'You were so brave!' cried the {f}.",
         "'I was scared,' said {H}, 'but I went anyway. I think that is what courage is.'",
         "{Fp} dancing with a red kite next to {Hp} at the edge of the wood"),
        ("From then on, whenever {H} felt afraid, {H} remembered the bramble path and smiled.",
         "The dark part of the wood never seemed quite so dark again.",
         "{Hp} smiling at the edge of the wood under the moon and stars, the bramble path "
         "behind"),
    ),
    "wood",
    (
        "house, tree, path | H | day | wide left standing",
        "brambles, path, tree | H | dusk | medium right standing",
        "tree, kite | FH | dusk | medium left standing",
        "brambles, path | HF | dusk | close centre standing",
        "brambles, path, moon | H | night | wide centre walking",
        "brambles, moon | H | night | close left walking",
        "river, tree, kite, moon | H | night | medium right reaching",
        "path, brambles, kite, moon | H | night | wide left walking",
        "kite, house | FH | dawn | medium centre waving",
        "path, moon, stars | H | night | close centre standing",
    ),
)

_FRIENDSHIP = Theme(
    "friendship",
    ("friend",),
    ("friend", "friends", "friendship", "shy", "lonely", "alone", "together", "hello"),
    ("duck", "rabbit", "mouse", "fox", "bear"),
    ("Willow Pond", "Lily Pond", "Reedy Water"),
    ("{H} Says Hello", "{H} and the Red Ball"),
    (
        "A friend is found by being brave enough to say hello; friendship grows from small "
        "kind steps.",
        "Friendship begins with one small hello, and being shy is no reason to be alone.",
    ),
    (
        ("{HI} lived beside {P}, a quiet pond ringed with willow trees and tall reeds.",
         "The water was so still that the clouds could see themselves in it.",
         "{Hp} sitting alone beside a quiet pond with willow trees"),
        ("{H} was so shy that {H} hid behind the reeds whenever anyone came by.",
         "Hiding felt safe, but it was lonely without a friend.",
         "{Hp} hiding shyly behind tall reeds at the edge of the pond"),
        ("One morning {FI} sat down on the far bank and began to sing.",
         "It was a cheerful song about the sun and the frogs.",
         "{Fp} singing on the far bank of the pond while {Hp} peeks from the reeds"),
        ("{H} wanted to say hello, but the word stayed stuck inside.",
         "{H}'s cheeks went warm, and {H} looked down at the water.",
         "{Hp} looking shyly across the pond at {Fp}"),
        ("Then {F}'s red ball rolled into the pond and floated away from the bank.",
         "'Oh no,' said {F}. 'I cannot reach it.'",
         "a red ball floating on the pond, {Fp} worried on the bank, {Hp} in the reeds"),
        ("{H} knew a path of stepping stones across the pond, and forgot to be shy.",
         "Hop, hop, hop went {H} across the stones.",
         "{Hp} hopping along a path of stepping stones across the pond toward a red ball"),
        ("{H} brought the ball back and said, very softly, 'Hello. I am {H}.'",
         "'Hello, {H},' said {F} with a smile. 'Will you be my friend?'",
         "{Hp} giving a red ball back to {Fp} beside the pond"),
        ("The two new friends played until the sun was low over the willows.",
         "They rolled the ball, counted frogs and told each other secrets.",
         "{Hp} and {Fp} playing with a red ball beside the pond at sunset"),
        ("The next day {H} did not hide behind the reeds at all.",
         "Having a friend, {H} found, made being shy feel much less lonely.",
         "{Hp} and {Fp} walking together along a path by the pond"),
        ("Every morning after that, two friends sang beside {P} instead of one.",
         "The willow trees swayed as if they were listening.",
         "{Hp} and {Fp} singing together beside the pond under a bright sun"),
    ),
    "pond",
    (
        "pond, tree | H | day | wide left sitting",
        "pond, reeds | H | day | close left standing",
        "pond, reeds | FH | day | wide left standing",
        "pond | H | day | close centre standing",
        "pond, ball, reeds | FH | day | medium right standing",
        "pond, stones, ball | H | day | medium centre walking",
        "pond, ball | HF | day | close left holding",
        "pond, ball, tree | HF | dusk | wide centre standing",
        "path, pond, reeds | HF | day | medium right walking",
        "pond, sun, tree | HF | day | wide left waving",
    ),
)

_KINDNESS = Theme(
    "kindness",
    ("kind",),
    ("kind", "kindness", "help", "helps", "helping", "helpful", "care", "caring", "gentle"),
    ("robin",),
    ("Oakwood Hollow", "Acorn Dell", "Mossy Hollow"),
    ("{H} and the Fallen Nest", "{H} Helps a Little Robin"),
    (
        "Kindness costs nothing, yet it is the best gift there is.",
        "Be kind whenever you can: one kind act can make a whole day good.",
    ),
    (
        ("{HI} lived in {P}, under an old oak tree taller than all the rest.",
         "Its branches were full of nests and its roots were full of burrows.",
         "{Hp} beneath a huge old oak tree in a green hollow"),
        ("One windy day a gust shook the oak, and a nest with {FI} inside tumbled to the "
         "ground.",
         "The little bird cheeped in fright.",
         "a small nest with {Fp} on the grass below a tall oak tree, leaves blowing"),
        ("Kindly and gently, {H} picked up the nest.",
         "'Don't worry,' said {H}. 'I will help you home.'",
         "{Hp} gently holding a nest with {Fp} in it under the oak tree"),
        ("But the branch where the nest belonged was very high.",
         "{H} looked up and up, until {H}'s neck felt stiff.",
         "{Hp} holding the nest and looking up at a high branch of the oak tree"),
        ("{H} piled up stones and logs, and began to climb.",
         "It was slow, wobbly work, but kindness is worth a little wobble.",
         "{Hp} climbing a pile of logs and stones beside the oak tree, holding the nest"),
        ("At last {H} set the nest safely back on its branch.",
         "{F} cheeped a little thank-you song.",
         "{Hp} placing the nest with {Fp} on a high branch of the oak tree"),
        ("Just then {F}'s mother flew home with a beakful of worms.",
         "When she saw her baby safe, she fluffed her feathers with joy.",
         "a mother robin flying to the nest in the oak tree where {Fp} waits"),
        ("'Thank you for being so kind,' sang the mother robin.",
         "'Anyone would help,' said {H}, a little shyly, 'when someone needs it.'",
         "the mother robin and {Fp} in the nest thanking {Hp} below the oak tree"),
        ("All spring {F} grew bigger and stronger, and {H} came to visit every day.",
         "Soon {F} was flying loops around the oak.",
         "{Fp} flying around the oak tree while {Hp} watches and waves"),
        ("One morning {F} left a bright red feather at the foot of the oak, where {H} lived.",
         "{H} kept it always, to remember how good it feels to be kind.",
         "{Hp} holding a red feather under the oak tree, {Fp} on a branch above"),
    ),
    "wood",
    (
        "oak | H | day | wide left standing",
        "oak, nest | F | day | medium centre standing",
        "oak, nest | H | day | close centre holding",
        "oak, nest | H | day | medium right standing",
        "oak, nest, stones | H | day | medium left climbing",
        "oak, nest | HF | day | close right reaching",
        "oak, nest | F | dusk | wide centre standing",
        "oak, nest | HF | dusk | medium left waving",
        "oak, flowers | FH | dawn | medium left waving",
        "oak, feather | HF | dawn | close centre holding",
    ),
)

_CURIOSITY = Theme(
    "curiosity",
    ("curio", "wonder"),
    ("curious", "curiosity", "wonder", "wonders", "star", "stars", "count", "counts",
     "counting", "question", "questions", "explore", "explores", "moon", "why"),
    ("owl", "mouse", "hedgehog", "rabbit", "bear"),
    ("Lantern Hill", "Starlight Hill", "Thistle Top"),
    ("{H} Counts the Stars", "{H} and the Thousand Stars"),
    (
        "Curiosity opens the world one question at a time, so never stop wondering.",
        "Stay curious: every question is a little lantern that shows you the next step.",
    ),
    (
        ("{HI} lived at the foot of {P}, the highest hill for miles.",
         "From the top you could see a winding river, dark woods and the whole wide sky.",
         "{Hp} at the foot of a tall green hill, a river and trees far away"),
        ("Every night {H} looked up at the stars and wondered how many there were.",
         "'One, two, three...' counted {H}, but always fell asleep before the end.",
         "{Hp} looking up at a sky full of stars and a crescent moon"),
        ("One evening, curious as ever, {H} set off to the top of the hill to count them "
         "properly.",
         "{H} packed a lantern, a notebook and a pencil.",
         "{Hp} climbing a winding path up a hill at dusk, carrying a lantern"),
        ("At the top sat {FI}, who was gazing at the sky too.",
         "'I have been counting stars for years and years,' said {F}.",
         "{Hp} meeting {Fp} on top of a hill under the stars"),
        ("'How many are there?' asked {H}.",
         "'More than anyone can count,' said {F}, 'but every one is worth a look.'",
         "{Hp} and {Fp} sitting on the hilltop pointing at the stars"),
        ("{F} showed {H} how some stars make pictures: a bear, a swan and a great big spoon.",
         "{H} traced each picture in the air with one {limb}.",
         "{Hp} and {Fp} tracing pictures between the stars, the moon above the hill"),
        ("All night long {H} asked questions, and every answer made {H} wonder something new.",
         "Why do stars twinkle? Where does the moon go in the daytime?",
         "{Hp} asking questions beside {Fp}, a glowing lantern and a sky full of stars"),
        ("When the sky turned pink, {H} had counted one thousand and one stars.",
         "It was not all of them, but it was a wonderful start.",
         "{Hp} on the hilltop at sunrise holding a notebook full of numbers"),
        ("{H} walked home down the hill with a head full of wonder.",
         "Curiosity, {H} thought, is like a lantern: it always shows the next step.",
         "{Hp} walking down a hill path at sunrise, a lantern in hand"),
        ("And on every clear night after that, {H} and {F} met on {P} to count stars "
         "together.",
         "There were always more to count, which was exactly how {H} liked it.",
         "{Hp} and {Fp} on top of a hill counting stars together under the moon"),
    ),
    "hill",
    (
        "hill, river, tree | H | day | wide left standing",
        "moon, stars, house | H | night | medium centre pointing",
        "hill, path, lantern | H | dusk | wide right climbing",
        "hill, stars, lantern | HF | night | medium left standing",
        "hill, stars | HF | night | close centre pointing",
        "hill, stars, moon | HF | night | wide right pointing",
        "lantern, stars | HF | night | close left sitting",
        "hill, notebook, sun | H | dawn | medium centre holding",
        "hill, path, lantern | H | dawn | wide left walking",
        "hill, moon, stars | HF | night | medium right sitting",
    ),
)

_DISCOVERY = Theme(
    "discovery",
    ("learn",),
    ("learn", "learns", "learning", "how", "why", "what", "discover", "science", "about"),
    ("grandma", "grandpa", "teacher"),
    ("Puddleby", "Little Hollow", "Larkspur"),
    ("{H} Finds Out About {St}", "{H} and the Wonder of {St}"),
    (
        "Every question is a door: open it, and the world gets a little bigger.",
        "The best way to learn is to ask, to look closely and to ask again.",
    ),
    (
        ("{HI} lived in {P}, a little town at the foot of the hills, and wanted to know "
         "all about {S}.",
         "{H} asked about {S} at breakfast, at lunch and at bedtime.",
         "{Hp} at the window of a little house, wondering about {S}"),
        ("One morning {FI} said, 'Questions are for answering. Let us go and learn about {S} "
         "together.'",
         "{H} packed a notebook, a pencil and an apple for the way.",
         "{Hp} and {Fp} setting off along a path from a little house"),
        ("So they travelled all the way to {SP}, to see {S} for themselves.",
         "{H} could hardly sit still on the way.",
         "{Hp} and {Fp} arriving at {SP}"),
        ("'Here is the first thing to learn,' said {F}. '{X1}'",
         "{H} wrote it down in the notebook, word for word.",
         "{Fp} pointing out {S} to {Hp}"),
        ("{H} looked very closely and learned something new: {X2}",
         "'I never knew that!' said {H}.",
         "{Hp} looking closely at {S}"),
        ("Then {F} showed {H} one more thing. {X3}",
         "{H} drew a little arrow in the notebook to remember it.",
         "{Fp} and {Hp} exploring {SP}"),
        ("{H} had one last question, and {F} smiled. {X4}",
         "'Now you know more about {S} than most grown-ups,' laughed {F}.",
         "{Hp} asking {Fp} a question beside {S}"),
        ("Before they left, {H} drew a big picture of {S} in the notebook, with labels and "
         "arrows.",
         "It was the best drawing {H} had ever made.",
         "{Hp} sitting and drawing {S} in a notebook at dusk"),
        ("Back home in {P}, {H} told everyone what {H} had learned about {S}.",
         "Even the grown-ups learned something new.",
         "{Hp} at home in the evening, holding up a drawing of {S}"),
        ("That night {H} fell asleep dreaming of {S}, and of all the questions still to ask.",
         "Learning one thing, {H} decided, is the best way to find the next question.",
         "{Hp} asleep in a little house under the moon and stars"),
    ),
    "town",
    (
        "$, book | H | day | medium centre standing | town",
        "path, notebook | HF | day | wide left walking | town",
        "$ | HF | day | wide right walking | $",
        "$ | FH | day | medium left pointing | $",
        "$ | H | day | close right reaching | $",
        "$ | FH | day | wide centre pointing | $",
        "$ | HF | dusk | medium left standing | $",
        "$, notebook | H | dusk | close centre sitting | $",
        "notebook | H | dusk | medium right holding | town",
        "moon, stars | H | night | wide centre sleeping | town",
    ),
)

THEMES: dict[str, Theme] = {
    t.name: t for t in (_SHARING, _KINDNESS, _FRIENDSHIP, _COURAGE, _CURIOSITY, _DISCOVERY)
}  # in this order a tie between two themes is decided

SUBJECTS: tuple[Subject, ...] = (
    Subject(
        "volcanoes",
        ("volcano", "volcanoes", "lava", "magma", "eruption", "erupt", "erupts"),
        "mountains",
        "the mountains, where an old volcano stands",
        ("volcano",),
        ("Deep under the ground it is so hot that rock melts into a glowing liquid called "
         "magma.",
         "when the magma pushes up through a crack and bursts out, we say the volcano erupts, "
         "and the hot rock that flows down its sides is called lava.",
         "When lava cools it turns hard, and layer after layer of it makes the volcano taller.",
         "'Most volcanoes sleep for a very long time, and scientists watch them closely to keep "
         "everyone safe.'"),
    ),
    Subject(
        "rain",
        ("rain", "rains", "raining", "rainy", "cloud", "clouds", "puddle", "puddles", "weather",
         "cycle"),
        "meadow",
        "a wide meadow under a big grey sky",
        ("cloud", "rain", "umbrella"),
        ("The sun warms the water in seas and puddles until tiny drops rise into the air.",
         "high up, where it is cold, the tiny drops join together and make clouds.",
         "When the drops in a cloud grow too big and heavy, they fall down as rain.",
         "'The rain runs into rivers and back to the sea, and then it all starts again.'"),
    ),
    Subject(
        "rainbows",
        ("rainbow", "rainbows"),
        "meadow",
        "a green meadow just after a shower",
        ("rainbow", "rain", "sun"),
        ("A rainbow appears when the sun shines through raindrops.",
         "sunlight looks white, but it is really all the colours mixed together.",
         "Each raindrop bends the light and splits it into red, orange, yellow, green, blue "
         "and violet.",
         "'To see a rainbow, stand with the sun behind you and the rain in front of you.'"),
    ),
    Subject(
        "the moon",
        ("moon", "moons", "lunar"),
        "hill",
        "the top of a hill far from the town lights",
        ("moon", "stars", "telescope"),
        ("The moon does not make its own light; it shines because the sun lights it up.",
         "the moon travels around the Earth, once in about a month.",
         "As it travels, we see more or less of its sunny side, so it seems to change shape.",
         "'Astronauts have walked on the moon, and their footprints are still there.'"),
        "night",
    ),
    Subject(
        "space",
        ("space", "planet", "planets", "star", "stars", "sun", "rocket", "rockets",
         "astronaut", "astronauts", "solar", "galaxy", "universe"),
        "space",
        "a space centre, and then up in a rocket among the stars",
        ("rocket", "planet", "stars"),
        ("The sun is a star, the closest one to us, and the Earth travels around it.",
         "eight planets travel around the sun, and the Earth is the only one we know with life.",
         "The other stars are suns too, so far away that they look like tiny dots.",
         "'Rockets carry astronauts into space, where everything floats.'"),
        "night",
    ),
    Subject(
        "the sea",
        ("sea", "seas", "ocean", "oceans", "beach", "waves", "wave", "whale", "whales",
         "fish", "shells", "tide", "tides"),
        "seaside",
        "the seaside, where the waves roll onto the sand",
        ("waves", "boat", "fish", "shell"),
        ("The sea covers most of the Earth, and it is salty.",
         "twice a day the sea creeps up the beach and slides back again; these are the tides.",
         "Under the waves live fish, crabs, whales and creatures nobody has seen yet.",
         "'Shells on the beach were once the homes of little sea animals.'"),
    ),
    Subject(
        "bees",
        ("bee", "bees", "honey", "hive", "hives", "pollen"),
        "garden",
        "a sunny garden with a beehive at the end",
        ("hive", "bee", "flowers"),
        ("Bees fly from flower to flower to drink a sweet juice called nectar.",
         "as they visit the flowers, bees carry yellow pollen from one to the next, and that "
         "helps new seeds grow.",
         "Back in the hive, the bees turn the nectar into honey.",
         "'A single hive can hold thousands of bees, all working together.'"),
    ),
    Subject(
        "plants",
        ("plant", "plants", "seed", "seeds", "grow", "grows", "garden", "gardens", "flower",
         "flowers", "sunflower", "sunflowers", "tree", "trees"),
        "garden",
        "a garden full of vegetables and tall sunflowers",
        ("seedling", "sunflower", "flowers"),
        ("A plant starts as a seed, with a tiny plant and its food packed inside.",
         "with water and warmth the seed splits open, and a root grows down while a shoot "
         "grows up.",
         "Green leaves catch the sunlight and use it to make food for the plant.",
         "'A sunflower can grow taller than a grown-up in a single summer.'"),
    ),
    Subject(
        "dinosaurs",
        ("dinosaur", "dinosaurs", "fossil", "fossils"),
        "meadow",
        "a museum garden where a model dinosaur stands among the ferns",
        ("tree",),
        ("Dinosaurs lived on the Earth a very, very long time ago, long before people.",
         "some dinosaurs were as small as chickens, and some were longer than a bus.",
         "We know about dinosaurs because their bones turned to stone, and these are called "
         "fossils.",
         "'Birds are the dinosaurs' great-great-great-grandchildren.'"),
    ),
    Subject(
        "trains",
        ("train", "trains", "railway", "railways", "engine", "engines", "station"),
        "town",
        "the old station at the edge of town",
        ("train", "bridge"),
        ("A train runs on two metal rails that keep its wheels on the track.",
         "the first trains were pulled by steam engines that burned coal to boil water.",
         "Many trains today run on electricity instead.",
         "'One train can carry as many people as hundreds of cars, which is kind to the air.'"),
    ),
    Subject(
        "snow",
        ("snow", "snowy", "snowflake", "snowflakes", "winter", "ice", "frost"),
        "snow",
        "a snowy field at the edge of town",
        ("snowflakes",),
        ("Snow falls when a cloud is so cold that its drops freeze into ice crystals.",
         "every snowflake has six sides, and no two are exactly alike.",
         "Fresh snow is full of air, so it is soft and quiet underfoot.",
         "'When the sun comes out, snow melts into water and runs away to the rivers.'"),
    ),
    Subject(
        "autumn leaves",
        ("autumn", "fall", "leaf", "leaves", "seasons", "season"),
        "wood",
        "a wood where the trees are turning red and gold",
        ("tree", "leaves"),
        ("In autumn the days grow shorter and cooler.",
         "leaves are green because of something inside them that catches sunlight.",
         "When there is less sun, the green fades, and the yellows and reds show through.",
         "'Then the leaves fall, and the tree rests until new buds open in spring.'"),
    ),
    Subject(
        "butterflies",
        ("butterfly", "butterflies", "caterpillar", "caterpillars", "cocoon"),
        "garden",
        "a garden full of flowers and fluttering wings",
        ("caterpillar", "butterfly", "flowers"),
        ("A butterfly starts life as a tiny egg on a leaf.",
         "out of the egg comes a hungry caterpillar that eats and eats and grows and grows.",
         "Then it makes a hard case around itself, and inside, it slowly changes.",
         "'One day the case opens, and out comes a butterfly with wet, crumpled wings.'"),
    ),
)
