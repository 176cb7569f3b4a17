"""The Shapes world: determinism, the detector's round trip, captions ↔ specs, edits, splits, folders."""
import logging
import random
import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageFilter

from comfy_star import data
from comfy_star.data import captions, detector, edits, knowledge, qa, shapes
from comfy_star.data.shapes import Scene, Shape


def degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    """Mild blur and noise, as a VQ decoder or diffusion model might leave."""
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(0.7)), np.float32)
    pixels += np.random.default_rng(rng.randrange(2**31)).normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


def as_bytes(sample):
    return [x.tobytes() if isinstance(x, Image.Image) else x for x in sample]


# --- determinism ---------------------------------------------------------------------------

@pytest.mark.parametrize("sample", [data.sample_t2i, data.sample_vqa, data.sample_caption, data.sample_edit])
def test_samples_are_deterministic_per_seed(sample):
    first = [as_bytes(sample(random.Random(7), size=64)) for _ in range(2)]
    again = [as_bytes(sample(random.Random(7), size=64)) for _ in range(2)]
    other = as_bytes(sample(random.Random(8), size=64))
    assert first == again and first[0] != other


def test_text_streams_are_deterministic_per_seed():
    assert [data.sample_knowledge(random.Random(3)) for _ in range(3)] == [data.sample_knowledge(random.Random(3))] * 3
    assert data.eval_prompts(5, 4, held_out=True) == data.eval_prompts(5, 4, held_out=True)
    assert data.knowledge_eval_prompts(5, 10) == data.knowledge_eval_prompts(5, 10)


def test_render_is_flat_palette_colours_at_any_size():
    scene = data.random_scene(random.Random(0), 4, 4)
    allowed = {*data.COLORS.values(), data.BACKGROUNDS[scene.background]}
    for size in (64, 128, 256):
        image = data.render(scene, size)
        assert image.size == (size, size) and image.mode == "RGB"
        assert {tuple(p) for p in np.asarray(image).reshape(-1, 3)} <= allowed


def test_random_scenes_keep_shapes_apart_and_inside():
    rng = random.Random(1)
    for _ in range(200):
        scene = data.random_scene(rng)
        assert 1 <= len(scene.shapes) <= 4
        for i, s in enumerate(scene.shapes):
            assert shapes.fits(s, scene.shapes[:i])
            assert shapes.SIZE_RANGE[0] <= s.size <= shapes.SIZE_RANGE[1]


def test_relation_and_region():
    a, b = Shape("circle", "red", 0.2, 0.5, 0.1), Shape("square", "blue", 0.8, 0.6, 0.1)
    assert shapes.relation(a, b) == "left of" and shapes.relation(b, a) == "right of"
    c = Shape("triangle", "green", 0.25, 0.9, 0.1)
    assert shapes.relation(a, c) == "above" and shapes.relation(c, a) == "below"
    assert shapes.region(a) == "left" and shapes.region(c) == "bottom-left"
    assert shapes.region(Shape("circle", "red", 0.5, 0.5, 0.1)) == "center"


# --- detector --------------------------------------------------------------------------------

def round_trip_rate(n: int, size: int, noisy: bool, tol: float) -> float:
    rng = random.Random(f"round-trip:{size}:{noisy}")
    hits = 0
    for _ in range(n):
        scene = data.random_scene(rng)
        image = data.render(scene, size)
        hits += data.scenes_match(data.detect(degrade(image, rng) if noisy else image), scene, tol)
    return hits / n


def test_detector_recovers_clean_scenes():
    assert round_trip_rate(500, 64, noisy=False, tol=1.5 / 64) >= 0.99


def test_detector_recovers_blurred_noisy_scenes():
    assert round_trip_rate(500, 64, noisy=True, tol=2 / 64) >= 0.95


def test_detector_works_at_larger_sizes_and_on_comfy_images():
    assert round_trip_rate(30, 128, noisy=False, tol=1 / 64) >= 0.99
    scene = data.random_scene(random.Random(2))
    comfy_image = np.asarray(data.render(scene), np.float32)[None] / 255  # 1×H×W×3 in [0, 1]
    assert data.scenes_match(data.detect(comfy_image), scene)


def test_detector_sees_nothing_in_plain_or_noise_images():
    assert data.detect(np.zeros((64, 64, 3), np.uint8)) == Scene([], "black")
    noise = np.random.default_rng(0).normal(128, 8, (64, 64, 3)).clip(0, 255).astype(np.uint8)
    assert data.detect(noise).shapes == []


def test_matches_spec_rejects_wrong_scenes():
    spec = {"objects": [{"kind": "circle", "color": "red", "count": 1}, {"kind": "square", "color": None, "count": 1}],
            "relation": {"a": 0, "b": 1, "rel": "left of"}, "background": "white"}
    red_circle, square = Shape("circle", "red", 0.2, 0.5, 0.1), Shape("square", "blue", 0.8, 0.5, 0.1)
    assert data.matches_spec(Scene([red_circle, square], "white"), spec)
    assert not data.matches_spec(Scene([square, Shape("circle", "red", 0.9, 0.2, 0.05)], "white"), spec)  # relation
    assert not data.matches_spec(Scene([red_circle, square], "black"), spec)  # background
    assert not data.matches_spec(Scene([red_circle], "white"), spec)  # missing object
    extra = Shape("triangle", "green", 0.5, 0.9, 0.05)
    assert not data.matches_spec(Scene([red_circle, square, extra], "white"), spec)
    assert data.matches_spec(Scene([red_circle, square, extra], "white"), spec, exclusive=False)


# --- captions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("category", captions.CATEGORIES)
def test_every_caption_category_is_satisfied_by_its_scene(category):
    rng = random.Random(category)
    for _ in range(40):
        caption, _, spec, scene = captions.random_caption(rng, category)
        image = degrade(data.render(scene), rng)
        assert data.matches_spec(data.detect(image), spec), (caption, detector.spec_failures(data.detect(image), spec))


def test_captions_for_existing_scenes_describe_them():
    rng = random.Random(4)
    seen = Counter()
    for _ in range(300):
        scene = data.random_scene(rng, 1, 2)
        for category, spec in captions.specs_for_scene(scene):
            seen[category] += 1
            assert data.matches_spec(data.detect(data.render(scene)), spec), (category, spec, scene)
        text, category = data.caption_for(scene, rng)
        assert text and category in (*captions.CATEGORIES, "describe")
    assert set(seen) == set(captions.CATEGORIES)


def test_sample_t2i_mixes_all_categories_evenly():
    rng = random.Random(5)
    counts = Counter(data.sample_t2i(rng)[2] for _ in range(1200))
    assert set(counts) == {*captions.CATEGORIES, "describe"}
    assert min(counts[c] for c in captions.CATEGORIES) > 120


def test_held_out_phrasings_never_appear_in_training():
    assert not captions.caption_phrasings(True) & captions.caption_phrasings(False)
    assert not knowledge.knowledge_phrasings(True) & knowledge.knowledge_phrasings(False)
    rng = random.Random(6)
    training = {captions.random_caption(rng)[0] for _ in range(5000)}
    held_out = [p["prompt"] for p in data.eval_prompts(0, 50, held_out=True)]
    assert not training & set(held_out)
    assert len(set(held_out)) > 250  # varied, not a handful of sentences
    assert all(p["category"] in captions.CATEGORIES for p in data.eval_prompts(0, 3))


def test_category_weights_shift_the_draw_and_no_weights_keep_the_recorded_one():
    """Stage 4 can draw the categories that need two things told apart more often; without weights
    (or with empty ones) the draw is the one every recorded run made, seed for seed."""
    for seed in range(20):
        plain, empty = random.Random(seed), random.Random(seed)
        assert captions.random_caption(plain)[:2] == captions.random_caption(empty, category_weights={})[:2]
    rng = random.Random(7)
    weights = {"two_objects": 3, "position": 0}
    drawn = Counter(captions.random_caption(rng, category_weights=weights)[1] for _ in range(2000))
    assert "position" not in drawn
    assert drawn["two_objects"] > 2 * drawn["single_object"] > 0  # 3:1 expected
    rng = random.Random(8)
    t2i = Counter(data.sample_t2i(rng, size=32, category_weights={"colors": 0})[2] for _ in range(300))
    assert "colors" not in t2i and "describe" in t2i



def test_varied_phrasings_are_drawn_only_when_asked_and_never_use_held_out_wording():
    """`--varied-phrasings` gives stage 4 more training wording; ShapesEval's held-out prompts must stay
    unseen: no template shared, no word that only held-out phrasings use, and each caption still
    names every kind, colour and count its spec promises."""
    words = lambda texts: {w for t in texts for w in re.findall(r"(?<!{)\b[a-z]+\b(?![^{]*})", t)}
    held_out = captions.caption_phrasings(True) | knowledge.knowledge_phrasings(True)
    training = captions.caption_phrasings(False) | knowledge.knowledge_phrasings(False)
    varied = captions.caption_phrasings(False, varied=True) - training
    assert len(varied) >= 40 and not varied & held_out
    held_out_only = words(held_out) - words(training)
    assert {"please", "just", "together", "all", "group"} <= held_out_only  # the regex reads the templates
    assert not words(varied) & held_out_only, words(varied) & held_out_only
    new_words = words(varied) - words(training)  # e.g. "sketch", "lone", "precisely", "beneath"
    uses_new = lambda caption: bool(set(re.findall(r"[a-z]+", caption)) & new_words)
    plain = [captions.random_caption(random.Random(i))[0] for i in range(1000)]
    assert not any(map(uses_new, plain))
    rng = random.Random(9)
    drawn = [captions.random_caption(rng, varied=True) for _ in range(1000)]
    assert 0.3 < sum(uses_new(c) for c, *_ in drawn) / len(drawn) < 0.9
    for caption, _, spec, _ in drawn:
        said = set(re.findall(r"[a-z0-9]+", caption))
        for o in spec["objects"]:
            assert {o["kind"] or "shape", (o["kind"] or "shape") + "s"} & said, (caption, spec)
            assert o["color"] is None or o["color"] in said, (caption, spec)
            if o["count"] > 1:
                assert {captions.NUMBERS[o["count"]], str(o["count"])} & said, (caption, spec)
    held = [p["prompt"] for p in data.eval_prompts(0, 50, held_out=True)]
    assert not {c for c, *_ in drawn} & set(held)
    rng = random.Random(10)
    assert any(uses_new(data.sample_t2i(rng, size=32, varied=True)[0]) for _ in range(50))

def test_first_token_follows_raster_order_over_the_token_grid():
    """Row by row over an 8 × 8 grid of 8 px tokens: a shape reaching a higher token row comes first, even
    if its centre is lower; in one token row, the one further left; a triangle starts at its apex."""
    high_small = Shape("circle", "red", 0.8, 0.30, 0.10)   # top at 0.20 → token row 1
    low_big = Shape("square", "red", 0.2, 0.35, 0.17)      # top at 0.18 → token row 1, further left
    lower = Shape("square", "red", 0.2, 0.60, 0.10)        # top at 0.50 → token row 4
    assert shapes.first_token(low_big) < shapes.first_token(high_small) < shapes.first_token(lower)
    assert shapes.first_token(low_big)[0] == 8 * 1 + 0
    apex = shapes.first_token(Shape("triangle", "red", 0.56, 0.5, 0.15))  # apex at (0.56, 0.35): row 2, column 4
    assert apex[0] == 8 * 2 + 4


def test_raster_order_names_a_pairs_first_drawn_object_first_and_changes_nothing_else():
    """`--raster-order`: a caption of two objects with no relation names first the one raster-order
    generation meets first; without the flag, either order; the scene still meets the spec, and
    specs of one object, of counts, or with a relation are left as drawn."""
    first_named_first = lambda spec, scene: detector._fits(min(scene.shapes, key=shapes.first_token),
                                                           spec["objects"][0])
    for flag, low, high in ((True, 1.0, 1.0), (False, 0.3, 0.7)):
        rng, pairs = random.Random(11), []
        for _ in range(400):
            caption, category, spec, scene = captions.random_caption(rng, raster_order=flag)
            assert detector.matches_spec(scene, spec), (caption, spec, scene)
            if category in ("two_objects", "color_attr"):
                pairs.append(first_named_first(spec, scene))
        assert len(pairs) > 80 and low <= sum(pairs) / len(pairs) <= high
    rng = random.Random(12)
    for category in ("single_object", "counting", "position"):
        spec = captions.random_spec(category, rng)
        assert captions.in_raster_order(spec, captions.scene_from_spec(spec, rng)) is spec
    spec = {"objects": [captions.obj("circle"), captions.obj("square")], "relation": None, "background": None}
    scene = Scene([Shape("square", "red", 0.5, 0.2, 0.1), Shape("circle", "blue", 0.5, 0.7, 0.1)])
    assert [o["kind"] for o in captions.in_raster_order(spec, scene)["objects"]] == ["square", "circle"]
    rng = random.Random(13)
    pair_first = lambda c: c[2] in ("two_objects", "color_attr")
    assert [c for c in (data.sample_t2i(rng, size=32, raster_order=True) for _ in range(60)) if pair_first(c)]


@pytest.mark.parametrize("text, problem", [("two_objects", "NAME=WEIGHT"), ("circle=2", "NAME=WEIGHT"),
                                           ("position=lots", "not a number"), ("position=-1", "0 or more"),
                                           ("position=nan", "0 or more"),
                                           (",".join(f"{c}=0" for c in captions.CATEGORIES), "no category")])
def test_bad_category_weights_are_named(text, problem):
    with pytest.raises(ValueError, match=problem):
        captions.parse_category_weights(text)
    assert captions.parse_category_weights(" two_objects=2, position=1.5 ,") == {"two_objects": 2.0, "position": 1.5}
    assert captions.parse_category_weights("") == {}


def test_filler_words_name_nothing_and_are_never_held_out_words():
    """The neutral words put around training captions teach the stack to find the content anywhere;
    they must not name anything in the Shapes world, nor leak a word only held-out phrasings use."""
    words = lambda texts: {w for t in texts for w in re.findall(r"(?<!{)\b[a-z]+\b(?![^{]*})", t)}
    fillers = words(captions.PREFIXES + captions.SUFFIXES)
    held_out_only = (words(captions.caption_phrasings(True)) | words(knowledge.knowledge_phrasings(True))) - (
        words(captions.caption_phrasings(False)) | words(knowledge.knowledge_phrasings(False)))
    assert {"please", "could", "depict", "just", "together"} <= held_out_only  # the regex reads the templates
    world = {*shapes.COLORS, *shapes.BACKGROUNDS, *shapes.SHAPES, *(k + "s" for k in shapes.SHAPES),
             *captions.NUMBERS.values(), *(w for r in shapes.RELATIONS for w in r.split()),
             *(w for r in qa.REGION_WORDS.values() for w in r.split()), "center", "middle", "top", "bottom",
             "big", "small", "large", "tiny", "corner", "corners", "side", "sides", "edge", "edges", "round"}
    world |= words(f for facts in (*knowledge.SHAPE_FACTS.values(), *knowledge.COLOR_FACTS.values(),
                                   *knowledge.COUNT_FACTS.values()) for f in facts)
    assert not fillers & held_out_only, fillers & held_out_only
    named = fillers & (world - {"a", "an", "the", "of", "for"})
    assert not named, named
    rng = random.Random(8)
    plain = {captions.random_caption(random.Random(i))[0] for i in range(200)}
    made = [captions.with_filler(c, rng) for c in sorted(plain)]
    changed = sum(m != c for m, c in zip(made, sorted(plain)))
    assert 0.35 < changed / len(made) < 0.65  # about P_FILLER of them
    assert all(c in m for m, c in zip(made, sorted(plain)))  # the caption itself is kept whole


def test_knowledge_prompts_answer_with_a_plain_caption_that_fits_the_spec():
    rng = random.Random(7)
    for _ in range(100):
        prompt, spec, explicit = knowledge.knowledge_prompt(rng)
        o = spec["objects"][0]
        number = {1: shapes.article(o["color"]), 2: "two", 3: "three", 4: "four"}[o["count"]]
        assert explicit == f"{number} {o['color']} {o['kind']}{'s' if o['count'] > 1 else ''}"
        assert data.matches_spec(data.detect(data.render(data.scene_from_spec(spec, rng))), spec)
    training = {data.sample_knowledge(rng)[0] for _ in range(3000)}
    for prompt, _, _ in data.knowledge_eval_prompts(0, 100):
        assert prompt not in training
    unseen = [p for p, _, _ in data.knowledge_eval_prompts(0, 50, unseen_facts=True)]
    held = {f for facts in knowledge.SHAPE_FACTS.values() for f in facts[-1:]}
    assert all(f not in t for t in training for f in held)
    assert any(f in p for p in unseen for f in held)


# --- questions ---------------------------------------------------------------------------------

def test_questions_have_short_answers_that_are_right():
    scene = Scene([Shape("circle", "red", 0.2, 0.2, 0.1), Shape("square", "blue", 0.8, 0.8, 0.1),
                   Shape("square", "green", 0.8, 0.25, 0.1)], "gray")
    rng = random.Random(8)
    answers = {}
    for _ in range(5000):
        q, a = qa.question_for(scene, rng)
        assert answers.setdefault(q, a) == a and " " not in a
    assert answers.get("what colour is the circle?") == "red"
    assert answers.get("what shape is the blue object?") == "square"
    assert answers.get("how many squares are there?") == "2"
    assert answers.get("is the circle left or right of the blue square?") == "left"
    assert answers.get("is there a green square?") == "yes"
    assert answers.get("where is the circle?") == "top-left"
    assert "what colour is the square?" not in answers  # two squares: no single answer
    assert qa.describe(scene) == ("a red circle at the top left, a green square at the top right and "
                                  "a blue square at the bottom right, on a gray background")


# --- edits ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", edits.EDIT_KINDS)
def test_edits_change_what_they_say_and_keep_the_rest(kind):
    rng = random.Random(kind)
    done = 0
    while done < 30:
        scene = data.random_scene(rng, 2, 3)
        try:
            instruction, target, got_kind, boxes = data.edit_for(scene, rng, kind)
        except ValueError:  # e.g. no room to move or add: edit_for(kind=None) would pick another
            continue
        done += 1
        assert got_kind == kind and instruction
        before, after = np.asarray(data.render(scene)), np.asarray(data.render(target))
        keep = edits.unchanged_mask(boxes, 64)
        assert (before[keep] == after[keep]).all() and not (before == after).all()
        assert data.scenes_match(data.detect(after), target)
        assert edits.followed(data.detect(after), scene, target, kind)
        assert not edits.followed(data.detect(before), scene, target, kind)  # an unchanged image never follows
        kept = [s for s in scene.shapes if s in target.shapes]
        if kind == "background":
            assert target.background != scene.background and target.shapes == scene.shapes
        elif kind == "add":
            assert len(target.shapes) == len(scene.shapes) + 1 and kept == scene.shapes
        else:  # exactly one shape changed (or went), the others are untouched
            assert len(kept) == len(scene.shapes) - 1 and target.background == scene.background
            old = next(s for s in scene.shapes if s not in target.shapes)
            assert old.kind in instruction
            new = [s for s in target.shapes if s not in scene.shapes]
            if kind == "remove":
                assert not new
            elif kind == "recolor":
                assert new[0].color in instruction and (new[0].kind, new[0].x) == (old.kind, old.x)
            elif kind == "replace":
                assert new[0].kind in instruction and (new[0].color, new[0].x, new[0].y) == (old.color, old.x, old.y)
            elif kind == "move":
                moved = ((new[0].x - old.x) * 3, (new[0].y - old.y) * 3)
                side = "left" if moved[0] < 0 else "right" if moved[0] > 0 else "up" if moved[1] < 0 else "down"
                assert side in instruction


def test_edit_weights_shift_the_draw_and_no_weights_keep_the_recorded_one():
    """Stage 4 can draw the edits the stack fails most (move) more often; without weights (or with
    empty ones) the draw is the one every recorded run made, seed for seed."""
    for seed in range(30):
        plain, empty = random.Random(seed), random.Random(seed)
        a, b = data.sample_edit(plain, 32), data.sample_edit(empty, 32, edit_weights={})
        assert (a[1], a[3]) == (b[1], b[3]) and plain.random() == empty.random()
    rng = random.Random(7)
    drawn = Counter(data.sample_edit(rng, 32, edit_weights={"move": 4, "background": 0})[3] for _ in range(600))
    assert "background" not in drawn
    assert drawn["move"] > 2 * drawn["recolor"] > 0  # 4:1 asked; move sometimes finds no room
    assert edits.parse_edit_weights(" move=3, add=0.5 ,") == {"move": 3.0, "add": 0.5}
    for text, problem in [("slide=2", "NAME=WEIGHT"), ("move=-1", "0 or more"),
                          (",".join(f"{k}=0" for k in edits.EDIT_KINDS), "no edit")]:
        with pytest.raises(ValueError, match=problem):
            edits.parse_edit_weights(text)


def test_an_edit_that_says_no_place_is_followed_wherever_it_puts_the_shape():
    """"add a red circle" and "move the square left" fix what and which way, not where: `followed`
    accepts any free place for the added shape and any distance (from the data's shortest step) the
    named way; every other edit must match its target, and nothing else may move."""
    square, blue = Shape("square", "green", 0.7, 0.5, 0.1), Shape("triangle", "blue", 0.2, 0.8, 0.1)
    source = Scene([square, blue], "white")
    added = Scene([square, blue, Shape("circle", "red", 0.2, 0.2, 0.1)], "white")
    follows = lambda found, target, kind: edits.followed(Scene(found, "white"), source, target, kind)
    assert follows([square, blue, Shape("circle", "red", 0.5, 0.15, 0.08)], added, "add")       # elsewhere
    assert not data.scenes_match(Scene([square, blue, Shape("circle", "red", 0.5, 0.15, 0.08)], "white"), added)
    assert not follows([square, blue, Shape("circle", "green", 0.5, 0.15, 0.1)], added, "add")  # wrong colour
    assert not follows([square, blue, Shape("square", "red", 0.5, 0.15, 0.1)], added, "add")    # wrong kind
    assert not follows([replace(square, x=0.8), blue, Shape("circle", "red", 0.2, 0.2, 0.1)], added, "add")
    assert not follows([square, blue], added, "add")
    assert not edits.followed(Scene(added.shapes, "black"), source, added, "add")                # background
    moved = Scene([replace(square, x=0.5), blue], "white")  # "move the square left" by 0.2
    assert follows([replace(square, x=0.45), blue], moved, "move")           # further the same way
    assert follows([replace(square, x=0.58, y=0.52), blue], moved, "move")   # the shortest step, off by a pixel
    assert not follows([replace(square, x=0.65), blue], moved, "move")       # not far enough
    assert not follows([replace(square, x=0.9), blue], moved, "move")        # the wrong way
    assert not follows([replace(square, x=0.5, y=0.35), blue], moved, "move")  # off its line
    assert not follows([replace(square, x=0.5), replace(blue, y=0.6)], moved, "move")  # another shape moved
    assert not follows([replace(square, x=0.5, color="red"), blue], moved, "move")
    recoloured = Scene([replace(square, color="red"), blue], "white")  # fixed targets: matched as before
    assert follows(recoloured.shapes, recoloured, "recolor")
    assert not follows([replace(square, color="red", x=0.4), blue], recoloured, "recolor")


# --- folders ---------------------------------------------------------------------------------------

def test_caption_folder_reads_good_files_and_skips_bad_ones(tmp_path, caplog):
    data.write_shapes_folder(tmp_path, 4, seed=0, kind="caption")
    Image.new("RGBA", (40, 30), (255, 0, 0, 0)).save(tmp_path / "rgba.png")
    (tmp_path / "rgba.txt").write_text("a transparent picture")
    Image.new("P", (32, 32)).save(tmp_path / "palette.png")
    (tmp_path / "palette.txt").write_text("a palette picture")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "broken.txt").write_text("a broken picture")
    Image.new("RGB", (8, 8)).save(tmp_path / "nocaption.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "empty.webp")
    (tmp_path / "empty.txt").write_text("  \n")
    with caplog.at_level(logging.WARNING, logger="comfy_star.data"):
        dataset = data.CaptionFolder(tmp_path, size=48)
    assert len(dataset) == 6
    assert sorted(p.name for p, _ in dataset.skipped) == ["broken.png", "empty.webp", "nocaption.jpg"]
    for name in ("broken.png", "empty.webp", "nocaption.jpg"):
        assert name in caplog.text
    items = {item["caption"]: item["image"] for item in dataset}
    assert all(im.mode == "RGB" and im.size == (48, 48) for im in items.values())
    assert items["a transparent picture"].getpixel((0, 0)) == (255, 255, 255)  # laid on white


def test_empty_folders_raise_with_the_folder_named(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        data.CaptionFolder(tmp_path)
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="expected|Expected"):
        data.CaptionFolder(tmp_path)
    with pytest.raises(ValueError, match="source"):
        data.EditFolder(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        data.CaptionFolder(tmp_path / "missing")


def test_edit_folder_pairs_by_name_and_skips_incomplete(tmp_path):
    data.write_shapes_folder(tmp_path, 5, seed=1, kind="edit")
    (tmp_path / "target" / "00001.png").unlink()
    (tmp_path / "instructions" / "00002.txt").write_text("")
    (tmp_path / "instructions" / "00003.txt").unlink()
    dataset = data.EditFolder(tmp_path)
    assert len(dataset) == 2
    assert sorted(p.name for p, _ in dataset.skipped) == ["00001.png", "00002.png", "00003.png"]
    item = dataset[0]
    assert item["source"].size == item["target"].size == (64, 64) and item["instruction"]
