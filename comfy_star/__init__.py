"""comfy-star: STAR (STacked AutoRegressive unified multimodal model) as a library.

    from comfy_star import STAR
    star = STAR.from_pretrained()          # the embedded default model, star-shapes
    star.generate("a red circle", seed=0)[0].save("circle.png")
"""
__version__ = "0.1.0"


def __getattr__(name):  # lazy: importing the package must not pull in torch models
    if name == "STAR":
        from .pipeline import STAR
        return STAR
    if name == "MANAGER":
        from .manager import MANAGER
        return MANAGER
    raise AttributeError(name)


__all__ = ["STAR", "MANAGER", "__version__"]
