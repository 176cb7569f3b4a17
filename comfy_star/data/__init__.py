"""The Shapes world (scenes, renderer, captions, questions, edits, knowledge), its detector,
the training streams built on them, and folder datasets for your own images.

    shapes     COLORS, BACKGROUNDS, SHAPES, Shape, Scene, render, random_scene, relation, region
    captions   six GenEval categories: caption ↔ spec ↔ scene; eval_prompts (held-out phrasings)
    qa         question_for, describe
    edits      edit_for: recolor, add, remove, move, replace, background; followed (was the instruction done?)
    knowledge  knowledge_prompt, knowledge_eval_prompts
    detector   detect (pixels → Scene), matches_spec, scenes_match
    negatives  near_miss: a scene that breaks a caption's promise in one way (preference tuning)
    stream     sample_t2i, sample_vqa, sample_caption, sample_edit, sample_knowledge, sample_preference
    folder     CaptionFolder, EditFolder, write_shapes_folder
    weights    parse_weights: "name=W,..." draw weights for the training streams
"""
from . import captions, detector, edits, folder, knowledge, negatives, qa, shapes, stream, weights
from .captions import CATEGORIES, caption_for, caption_from_spec, eval_prompts, random_spec, scene_from_spec
from .detector import detect, matches_spec, scenes_match, spec_failures
from .edits import EDIT_KINDS, edit_for
from .folder import CaptionFolder, EditFolder, write_shapes_folder
from .knowledge import knowledge_eval_prompts, knowledge_prompt
from .negatives import near_miss
from .qa import describe, question_for
from .shapes import BACKGROUNDS, COLORS, SHAPES, Scene, Shape, random_scene, region, relation, render
from .stream import sample_caption, sample_edit, sample_knowledge, sample_preference, sample_t2i, sample_vqa

__all__ = [
    "captions", "detector", "edits", "folder", "knowledge", "negatives", "qa", "shapes", "stream", "weights",
    "CATEGORIES", "caption_for", "caption_from_spec", "eval_prompts", "random_spec", "scene_from_spec",
    "detect", "matches_spec", "scenes_match", "spec_failures", "EDIT_KINDS", "edit_for",
    "CaptionFolder", "EditFolder", "write_shapes_folder", "knowledge_eval_prompts", "knowledge_prompt", "near_miss",
    "describe", "question_for", "BACKGROUNDS", "COLORS", "SHAPES", "Scene", "Shape", "random_scene",
    "region", "relation", "render",
    "sample_caption", "sample_edit", "sample_knowledge", "sample_preference", "sample_t2i", "sample_vqa",
]
