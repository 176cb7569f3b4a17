"""The README's library example runs as written, on the embedded model, and does what its comments say."""
from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from comfy_star.data import detector

README = Path(__file__).resolve().parents[1] / "README.md"
SPEC = {"objects": [{"kind": "circle", "color": "red", "count": 1}, {"kind": "square", "color": "blue", "count": 1}],
        "relation": {"a": 0, "b": 1, "rel": "left of"}, "background": None}  # the example's prompt


def library_example() -> str:
    section = README.read_text(encoding="utf-8").split("## The library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_library_example_runs_draws_its_prompt_and_answers_as_its_comment_says(tmp_path, monkeypatch):
    code = library_example()
    assert "a red circle to the left of a blue square" in code
    monkeypatch.chdir(tmp_path)
    names = {}
    exec(compile(code, str(README), "exec"), names)
    with Image.open(tmp_path / "out.png") as im:
        assert detector.spec_failures(detector.detect(im.convert("RGB")), SPEC) == []
    # a line `expression  # "answer"` must give that answer
    claims = re.findall(r'^(star\.\w+\(.*\))\s+#\s+"([^"]+)"$', code, re.M)
    assert claims, "the example claims no answer: nothing to check"
    for expression, said in claims:
        assert eval(expression, names) == said, expression
