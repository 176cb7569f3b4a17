"""STAR VQA: the frozen base VLM answers a question about an image."""
from __future__ import annotations

import comfy.model_management

from . import checks
from .convert import image_to_pil
from .progress import Progress
from .schema import ComfyNode, Image, Int, NodeOutput, String, model_input, schema, text_output


class STARVQA(ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            "STARVQA", "STAR VQA",
            "Answers a question about an image with the frozen base VLM (STAR's understanding is the base's, "
            "untouched by image-generation training). The answer shows on the node and is a STRING output.",
            inputs=[
                model_input(),
                Image.Input("image", tooltip="The image to ask about (any size; a batch gives one answer per image)."),
                String.Input("question", multiline=True, default="how many shapes are there?",
                             tooltip="The question, e.g. 'what colour is the circle?' or 'describe the image'."),
                Int.Input("max_tokens", default=64, min=1, max=4096, tooltip="Most tokens the answer may have."),
            ],
            outputs=[String.Output(display_name="answer",
                                   tooltip="The answer; for a batch, one line per image.")],
            output_node=True,
        )

    @classmethod
    def execute(cls, model, image, question, max_tokens=64) -> NodeOutput:
        question = checks.prompt(question, "question")
        max_tokens = checks.positive_int(max_tokens, "max_tokens", 4096)
        checks.prompt_fits(model, question, "question", max_tokens + checks.image_tokens(model),
                           budget=("max_tokens", max_tokens))
        images = image_to_pil(image, "image")
        progress = Progress(len(images))
        answers = []
        for i, im in enumerate(images):
            comfy.model_management.throw_exception_if_processing_interrupted()
            answers.append(model.answer(im, question, max_new_tokens=max_tokens))
            progress(i + 1)
        text = answers[0] if len(answers) == 1 else "\n".join(f"{i + 1}: {a}" for i, a in enumerate(answers))
        return NodeOutput(text, ui=text_output(text))
