"""A deterministic synthetic image task for the four Table 3 task types: coloured shapes drawn with PIL.

No VQA / GQA / NLVR2 / COCO data is reachable offline, so this small real-image task stands in for them in tests and
benchmarks. Each image holds one to three shapes of distinct colours and kinds, each in the left or right half:

* ``vqa:``  "what color is the <shape> ?" -> colour, and "how many shapes are there ?" -> one / two / three
* ``gqa:``  "where is the <colour> shape ?" -> left / right
* ``nlvr:`` two images, "there is a <colour> shape in both images" -> true / false (balanced)
* ``caption:`` "a <colour> <shape> on the <side> and ..." (left to right)

Every answer needs the image: without it the best a model can do is the text-only prior (the majority answer per
question type), which :func:`text_only_prior` computes.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from ..errors import import_optional
from .metrics import vl_metrics
from .tasks import VLExample, get_vl_task, make_example

if TYPE_CHECKING:
    from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("circle", "square", "triangle")
COUNTS = ("one", "two", "three")
SIZE = 64


def make_scene(rng: random.Random) -> list[tuple[str, str, str, int, int]]:
    """1-3 objects ``(colour, shape, side, x, y)`` with distinct colours and shapes."""
    n = rng.randint(1, 3)
    colours, shapes = rng.sample(list(COLOURS), n), rng.sample(SHAPES, n)
    out = []
    for colour, shape in zip(colours, shapes, strict=True):
        side = rng.choice(("left", "right"))
        x = rng.randint(4, SIZE // 2 - 20) + (SIZE // 2 if side == "right" else 0)
        out.append((colour, shape, side, x, rng.randint(4, SIZE - 20)))
    return out


def draw(scene) -> Image.Image:
    pil = import_optional("PIL.Image", "vision", "drawing the synthetic images")  # laddertune[vision]
    draw_module = import_optional("PIL.ImageDraw", "vision", "drawing the synthetic images")
    img = pil.new("RGB", (SIZE, SIZE), (255, 255, 255))
    pen = draw_module.Draw(img)
    for colour, shape, _, x, y in scene:
        box, fill = (x, y, x + 15, y + 15), COLOURS[colour]
        if shape == "circle":
            pen.ellipse(box, fill=fill)
        elif shape == "square":
            pen.rectangle(box, fill=fill)
        else:
            pen.polygon([(x, y + 15), (x + 15, y + 15), (x + 7, y)], fill=fill)
    return img


def caption(scene) -> str:
    return " and ".join(f"a {c} {s} on the {side}" for c, s, side, _, _ in sorted(scene, key=lambda o: o[3]))


def build(
    directory: str | Path, num_images: int, seed: int = 0, nlvr_rounds: int = 1
) -> tuple[list[VLExample], dict]:
    """Draw ``num_images`` images into ``directory`` (``img00000.png``...) and make examples of all four tasks.

    NLVR2-style statements pair the images two by two; each of ``nlvr_rounds`` pairings pairs them anew (the first
    in order, the later ones shuffled), giving ``num_images // 2`` statements per pairing without drawing more
    images.

    Returns:
        (examples, scenes by image id).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    scenes = {}
    examples: list[VLExample] = []
    for k in range(num_images):
        image_id, scene = f"img{seed:02d}{k:05d}", make_scene(rng)
        draw(scene).save(directory / f"{image_id}.png")
        scenes[image_id] = scene
        colour, shape, side, _, _ = rng.choice(scene)
        if k % 2:
            question, answer = "how many shapes are there ?", COUNTS[len(scene) - 1]
        else:
            question, answer = f"what color is the {shape} ?", colour
        # Ten annotators who agree, as on a clear VQA v2 question: soft accuracy 1 for the right answer.
        examples.append(make_example("vqa", question, answer, [image_id], [answer] * 10))
        examples.append(make_example("gqa", f"where is the {colour} shape ?", side, [image_id]))
        examples.append(make_example("caption", "", caption(scene), [image_id]))
    ids = list(scenes)
    for round_ in range(nlvr_rounds):
        if round_:
            ids = rng.sample(ids, len(ids))
        for a, b in zip(ids[0::2], ids[1::2], strict=False):
            in_a, in_b = {o[0] for o in scenes[a]}, {o[0] for o in scenes[b]}
            both = sorted(in_a & in_b)
            truth = bool(both) and rng.random() < 0.5
            colour = rng.choice(both) if truth else rng.choice(sorted(set(COLOURS) - (in_a & in_b)))
            statement = f"there is a {colour} shape in both images"
            examples.append(make_example("nlvr", statement, "true" if truth else "false", [a, b]))
    return examples, scenes


def text_only_prior(train: list[VLExample], test: list[VLExample]) -> dict[str, float]:
    """Each task's score (its own metric, x100) when every test example gets the training majority answer for its
    exact text: what a model that cannot see the image reaches (the caption prior is one fixed caption)."""
    answers: dict[str, Counter] = {}
    for e in train:
        answers.setdefault(e.source, Counter())[e.target] += 1
    preds: dict[str, list[str]] = {}
    refs: dict[str, list] = {}
    for e in test:
        guess = answers[e.source].most_common(1)[0][0] if e.source in answers else ""
        preds.setdefault(e.task, []).append(guess)
        refs.setdefault(e.task, []).append(e.references)
    return {t: vl_metrics(get_vl_task(t).metric, preds[t], refs[t])["score"] for t in sorted(preds)}


def word_tokenizer(examples: list[VLExample]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the task's words (pad 0, eos 1, unk 2), appending ``</s>`` as T5's does."""
    words = sorted({w for e in examples for text in (e.source, e.target) for w in text.split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
