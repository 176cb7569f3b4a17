"""Endless training examples from the Shapes world, one per call, seeded by the rng passed in."""
from __future__ import annotations

import random

from PIL import Image

from .captions import random_caption, with_filler
from .edits import edit_for
from .knowledge import fact_question, knowledge_prompt
from .negatives import near_miss
from .qa import describe, question_for
from .shapes import random_scene, render

P_DESCRIBE = 0.1   # share of text-to-image captions that describe a whole random scene
P_FACT = 0.25      # share of knowledge examples that ask one fact on its own


def sample_t2i(rng: random.Random, size: int = 64,
               category_weights: dict[str, float] | None = None,
               varied: bool = False, raster_order: bool = False) -> tuple[str, Image.Image, str]:
    """(caption, image, category): the six GenEval categories evenly (or by category_weights, see
    captions.random_caption; varied: with captions.VARIED's phrasings too; raster_order: a pair's two
    objects named in the order they are drawn, captions.in_raster_order), sometimes a full
    description; half of the captions with neutral words around them (captions.with_filler)."""
    if rng.random() < P_DESCRIBE:
        scene = random_scene(rng)
        return with_filler(describe(scene), rng), render(scene, size), "describe"
    caption, category, _, scene = random_caption(rng, category_weights=category_weights, varied=varied,
                                                 raster_order=raster_order)
    return with_filler(caption, rng), render(scene, size), category


def sample_preference(rng: random.Random, size: int = 64) -> tuple[str, Image.Image, Image.Image, str]:
    """(caption, its render, a near miss's render, category): a training caption of the six categories,
    and a scene like its own that breaks it in one way (negatives.near_miss), for preference tuning."""
    while True:
        caption, category, spec, scene = random_caption(rng)
        miss = near_miss(spec, scene, rng)
        if miss is not None:
            return with_filler(caption, rng), render(scene, size), render(miss, size), category


def sample_vqa(rng: random.Random, size: int = 64) -> tuple[Image.Image, str, str]:
    scene = random_scene(rng)
    question, answer = question_for(scene, rng)
    return render(scene, size), question, answer


def sample_caption(rng: random.Random, size: int = 64) -> tuple[Image.Image, str]:
    scene = random_scene(rng)
    return render(scene, size), describe(scene)


def sample_edit(rng: random.Random, size: int = 64,
                edit_weights: dict[str, float] | None = None) -> tuple[Image.Image, str, Image.Image, str]:
    """(source, instruction, target, edit_kind): the kinds evenly, or by edit_weights (edits.edit_for)."""
    while True:  # evenly drawn, "background" always applies; weights that leave it out may need another scene
        scene = random_scene(rng, 1, 3)  # room left for "add"
        try:
            instruction, target, kind, _ = edit_for(scene, rng, weights=edit_weights)
            break
        except ValueError:
            continue
    return render(scene, size), instruction, render(target, size), kind


def sample_knowledge(rng: random.Random) -> tuple[str, str]:
    """(prompt, answer): a knowledge prompt → its plain caption, or one fact → its answer."""
    if rng.random() < P_FACT:
        return fact_question(rng)
    prompt, _, explicit = knowledge_prompt(rng)
    return prompt, explicit
