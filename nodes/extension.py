"""The pack's ComfyExtension: the list of STAR nodes, and the one-time setup at ComfyUI start."""
from __future__ import annotations

from comfy_star.manager import MANAGER

from . import paths
from .generate import STARDiffusionDecode, STARImplicitReasoning, STARStackedARSample
from .model import STARModelLoader, STARVQDecode, STARVQEncode
from .schema import ComfyExtension
from .train import STARFolderDataset, STARSaveCheckpoint, STARShapesDataset, STARTrainStackedLayers
from .understand import STARVQA

NODES = [
    STARModelLoader,
    STARVQEncode,
    STARVQDecode,
    STARImplicitReasoning,
    STARStackedARSample,
    STARDiffusionDecode,
    STARVQA,
    STARFolderDataset,
    STARShapesDataset,
    STARTrainStackedLayers,
    STARSaveCheckpoint,
]


class STARExtension(ComfyExtension):
    async def on_load(self) -> None:
        setup()

    async def get_node_list(self):
        return list(NODES)


def setup() -> None:
    """Register models/star and join ComfyUI's model management (idempotent)."""
    paths.register()
    MANAGER.use_comfy()


async def comfy_entrypoint() -> STARExtension:
    setup()  # ComfyUI 0.3.75 calls get_node_list but not on_load: set up here
    return STARExtension()
