"""The illustrated-story pipeline: the worked example built on the layers below.

``models`` holds the request/result types, validation and deterministic
names; ``entities`` the four entities and :func:`create_story`; ``html`` the
assembly of the final page; ``backends`` the image and text backends
(simulated by default, HTTP optionally); ``settings`` which backends and
limits the entities use. Nothing here imports httpx, Pillow or h11 until an
image is drawn or an HTTP backend or server is used.
"""

from storylab.story.backends import (
    ImageRequest,
    SimulatedImageBackend,
    SimulatedTextBackend,
)
from storylab.story.entities import (
    ContentSafetyCheckEntity,
    ImageGenerationEntity,
    StoryImagesFailedError,
    StoryPipelineEntity,
    StoryWriterEntity,
    create_story,
    generate_story,
    story_html,
)
from storylab.story.models import (
    ContentSafetyResult,
    GeneratedImageResult,
    ImagePrompt,
    PipelineResult,
    Stage,
    StoryCustomization,
    StoryOutput,
    StoryValidationError,
    pipeline_name,
    validate_story_request,
)
from storylab.story.settings import (
    StorySettings,
    configure,
    current_settings,
    global_image_capacity,
    use_settings,
)

__all__ = [
    "ContentSafetyCheckEntity",
    "ContentSafetyResult",
    "GeneratedImageResult",
    "ImageGenerationEntity",
    "ImagePrompt",
    "ImageRequest",
    "PipelineResult",
    "SimulatedImageBackend",
    "SimulatedTextBackend",
    "Stage",
    "StoryCustomization",
    "StoryImagesFailedError",
    "StoryOutput",
    "StoryPipelineEntity",
    "StorySettings",
    "StoryValidationError",
    "StoryWriterEntity",
    "configure",
    "create_story",
    "current_settings",
    "generate_story",
    "global_image_capacity",
    "pipeline_name",
    "story_html",
    "use_settings",
    "validate_story_request",
]
