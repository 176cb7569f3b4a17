"""`python scripts/make_thumbnails.py`: run every workflow on a real ComfyUI (the embedded model) and write workflows/<name>.jpg thumbnails:
the workflow's images side by side (nearest-neighbour upscaled), with its text outputs underneath."""
import json
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import comfy_harness as H  # noqa: E402

base = Path(tempfile.mkdtemp(prefix="star-thumbs-"))
shutil.rmtree(base, ignore_errors=True)
server = H.start_server(base_dir=base, extra_args=["--disable-api-nodes"], timeout=300)
T = 256
try:
    info = server.object_info()
    for wf_path in sorted((REPO / "workflows").glob("*.json")):
        api = H.ui_to_api(json.loads(wf_path.read_text()), info)
        hist = server.run(api, timeout=900)
        paths = server.output_images(hist)
        texts = [t for t in H.Client.output_texts(hist)]
        ims = [Image.open(p).convert("RGB") for p in paths]
        tiles = []
        for im in ims:
            scale = T / max(im.size)
            tiles.append(im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                                   Image.NEAREST if im.width <= T else Image.LANCZOS))
        text = " | ".join(dict.fromkeys(t.strip() for t in texts if t.strip()))
        lines = textwrap.wrap(text, 60)[:3] if text else []
        W = max(T, sum(t.width for t in tiles) + 8 * (len(tiles) - 1))
        Hh = T + (18 * len(lines) + 10 if lines else 0)
        canvas = Image.new("RGB", (W, Hh), "white")
        x = 0
        for t in tiles:
            canvas.paste(t, (x, (T - t.height) // 2))
            x += t.width + 8
        d = ImageDraw.Draw(canvas)
        for i, line in enumerate(lines):
            d.text((6, T + 6 + 18 * i), line, fill=(0, 0, 0), font=ImageFont.load_default())
        out = wf_path.with_suffix(".jpg")
        canvas.save(out, quality=90)
        print(out.name, canvas.size, len(ims), "images;", text[:120])
finally:
    server.stop()
