"""The stacked AR on a tiny random Qwen2.5-VL: frozen base, copy init, KV cache, CFG, seeds."""
import copy

import pytest
import torch

from comfy_star.ar.model import StackedAR, build_base, cache_argument
from comfy_star.ar.prompts import edit_rows, t2i_rows, uncond_row, chat_row
from comfy_star.ar.sampler import SampleParams, generate, guide, logits_processors, pick
from comfy_star.ar.sequence import Codes, Text, assemble
from comfy_star.ar.tokenizer import ChatFormat, byte_tokenizer
from comfy_star.config import preset

K, D_CODE = 64, 8


def tiny_ar_config():
    cfg = copy.deepcopy(preset("star-shapes").ar)
    t = cfg.base["text_config"]
    t.update(hidden_size=64, num_hidden_layers=3, intermediate_size=96, num_attention_heads=2, num_key_value_heads=1)
    t["rope_scaling"]["mrope_section"] = [4, 6, 6]
    v = cfg.base["vision_config"]
    v.update(hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64, depth=1, fullatt_block_indexes=[0])
    cfg.num_stacked_layers = 2
    return cfg


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = tiny_ar_config()
    model = StackedAR(build_base(cfg, attn="eager"), cfg, D_CODE, K)
    codebook = torch.randn(K, D_CODE)
    chat = ChatFormat(byte_tokenizer(), None)
    return model, codebook, chat


def test_base_frozen_and_stack_copied(tiny):
    model, _, _ = tiny
    assert not any(p.requires_grad for p in model.base.parameters())
    assert all(p.requires_grad for p in model.trainable_parameters())
    base_layers = model.base_text.layers
    for i, layer in enumerate(model.stack.layers):
        src = base_layers[len(base_layers) - len(model.stack.layers) + i]
        for (n, a), (_, b) in zip(layer.state_dict().items(), src.state_dict().items()):
            assert torch.equal(a, b), n
        assert layer.self_attn.layer_idx == i  # a fresh index, not the base's


def test_base_logits_bit_identical_after_training_step(tiny):
    model, codebook, chat = tiny
    batch = assemble(model, t2i_rows(chat, ["a red circle"]), codebook)
    before = model.base_logits(batch.embeds, batch.position_ids)
    fresh = build_base(tiny_ar_config(), attn="eager")
    fresh.load_state_dict(model.base.state_dict())
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    model.train()
    codes = torch.randint(0, K, (1, 5))
    rows = [[Text(chat_row(chat, "a red circle")), Codes(codes[0])]]
    b = assemble(model, rows, codebook)
    loss = model(b.embeds, b.position_ids)[0, -6:-1].logsumexp(-1).mean()
    loss.backward()
    opt.step()
    after = model.base_logits(batch.embeds, batch.position_ids)
    assert torch.equal(before, after)
    for (n, a), (_, b_) in zip(model.base.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b_), n


@pytest.fixture(scope="module")
def tiny_cells():
    """`tiny` with image-cell embeddings (a 4 × 4 grid), set to random values as if trained."""
    torch.manual_seed(0)
    cfg = tiny_ar_config()
    cfg.image_cells = 4
    model = StackedAR(build_base(cfg, attn="eager"), cfg, D_CODE, K)
    with torch.no_grad():
        model.adapter.cell_rows.normal_()
        model.adapter.cell_cols.normal_()
    return model, torch.randn(K, D_CODE), ChatFormat(byte_tokenizer(), None)


@pytest.mark.parametrize("which", ["tiny", "tiny_cells"])
def test_kv_cache_matches_full_recompute(which, request):
    """Sampled with the KV cache, token by token, the logits are those of the whole sequence
    recomputed: with cell embeddings, each token is embedded with its own cell in both."""
    model, codebook, chat = request.getfixturevalue(which)
    model.eval()
    params = SampleParams(cfg=3.0, temperature=0)  # greedy: tokens are a function of the logits
    rows = t2i_rows(chat, ["two blue squares", "a green triangle"])  # different lengths: left padding
    batch = assemble(model, rows, codebook)
    ids = generate(model, batch, codebook, 6, params)
    # slow path: recompute the whole sequence for every token
    slow = []
    for i in range(6):
        full = [r + [Codes(ids[j % 2, :i])] for j, r in enumerate(rows)]
        b = assemble(model, full, codebook)
        with torch.no_grad():
            logits = model(b.embeds, b.position_ids, b.attention_mask)[:, -1].float()
        slow.append(guide(logits, params.cfg, 2).argmax(-1))
    assert torch.equal(torch.stack(slow, 1), ids)


def test_the_kv_cache_is_passed_by_the_name_this_transformers_reads(tiny):
    """transformers 5.x renamed forward's `past_key_values` to `cache`; the old name warns and goes in
    5.40, inside our `<6` bound. The cached path must use whichever name the installed release reads."""
    import inspect
    import warnings
    model, codebook, chat = tiny
    for module in (model.base_text, model.stack):
        assert cache_argument(module) in inspect.signature(type(module).forward).parameters
    batch = assemble(model, t2i_rows(chat, ["a red circle"]), codebook)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")
        generate(model, batch, codebook, 3, SampleParams(temperature=0))


def test_cfg_one_is_the_conditional_path(tiny):
    model, codebook, chat = tiny
    batch = assemble(model, t2i_rows(chat, ["a red circle"]), codebook)
    g = lambda: torch.Generator().manual_seed(7)
    a = generate(model, batch, codebook, 8, SampleParams(cfg=1.0, top_k=10), g())
    cond_only = assemble(model, t2i_rows(chat, ["a red circle"])[:1] * 2, codebook)  # uncond rows never used
    b = generate(model, cond_only, codebook, 8, SampleParams(cfg=1.0, top_k=10), g())
    assert torch.equal(a, b)


def test_same_seed_same_tokens(tiny):
    model, codebook, chat = tiny
    batch = assemble(model, t2i_rows(chat, ["a red circle"]), codebook)
    p = SampleParams(cfg=4.0, top_k=20, top_p=0.9)
    a = generate(model, batch, codebook, 10, p, torch.Generator().manual_seed(1))
    b = generate(model, batch, codebook, 10, p, torch.Generator().manual_seed(1))
    c = generate(model, batch, codebook, 10, p, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_uncond_row_keeps_length_and_assistant_header():
    chat = ChatFormat(byte_tokenizer(), "You are a helpful assistant.")
    cond = chat_row(chat, "a cat")
    unc = uncond_row(chat, cond)
    tail = chat.encode("<|im_start|>assistant\n") + [chat.ids["<|vision_start|>"]]
    assert len(unc) == len(cond) and unc[0] == cond[0] and unc[-len(tail):] == tail
    assert set(unc[1:-len(tail)]) == {chat.ids["<|fim_pad|>"]}


@pytest.mark.parametrize("bad, named", [(dict(temperature=-1.0), "temperature"), (dict(cfg=-1.0), "cfg"),
                                        (dict(top_p=0.0), "top_p"), (dict(top_k=-5), "top_k"),
                                        (dict(cfg=float("nan")), "cfg"), (dict(top_k=float("inf")), "top_k")])
def test_sample_params_refuse_what_would_silently_mean_something_else(bad, named):
    """A negative temperature once reached `pick` and meant greedy sampling without a word (a
    benchmark passed a node's -1 "model default" straight to the library): refused, named."""
    with pytest.raises(ValueError, match=named):
        SampleParams(**bad)
    SampleParams(cfg=0.0, temperature=0.0, top_k=0, top_p=1.0)  # the documented edges stay valid


def test_filtering_matches_release_topk_topp():
    """Our transformers warpers keep the same tokens as the release's top_k_top_p_filtering."""
    torch.manual_seed(0)
    logits = torch.randn(4, 300)
    procs = logits_processors(SampleParams(top_k=50, top_p=0.8))
    ours = torch.isfinite(procs(None, logits.clone()))
    ref = logits.clone()
    ref[ref < torch.topk(ref, 50)[0][..., -1, None]] = -float("inf")
    s, idx = torch.sort(ref, descending=True)
    remove = torch.cumsum(torch.softmax(s, -1), -1) > 0.8
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    ref[remove.scatter(1, idx, remove)] = -float("inf")
    assert torch.equal(ours, torch.isfinite(ref))


def test_edit_rows_carry_codes_and_vision(tiny):
    model, codebook, chat = tiny
    src = torch.randint(0, K, (1, 16))
    rows = edit_rows(chat, ["make it blue"], src)
    assert len(rows) == 2 and any(isinstance(s, Codes) for s in rows[1])
    feats = [torch.randn(4, 64)]
    grid = torch.tensor([[1, 4, 4]])
    batch = assemble(model, rows, codebook, vision=(feats, grid))
    ids = generate(model, batch, codebook, 3, SampleParams(cfg=2.0, top_k=5), torch.Generator().manual_seed(0))
    assert ids.shape == (1, 3)


@pytest.mark.parametrize("layout", ["release", "source_last"])
def test_edit_layout_sets_the_source_to_output_distance(tiny, layout):
    """In "source_last" rows every source code is the same number of positions before the output
    token at its raster place whatever the instruction's length; in the release layout it is not."""
    model, codebook, chat = tiny
    src = torch.randint(0, K, (2, 16))
    rows = edit_rows(chat, ["blue", "turn the square into a large circle"], src, layout)
    grid = torch.tensor([[1, 4, 4], [1, 4, 4]])
    batch = assemble(model, rows, codebook, vision=([torch.randn(4, 64), torch.randn(4, 64)], grid))
    distances = []
    for r, row in enumerate(rows[:2]):
        pad = int((batch.attention_mask[r] == 0).sum())
        first_code = pad + sum(len(s.ids) for s in row[:1])  # row[0] is the Text before the codes
        assert isinstance(row[1], Codes)
        distances.append(int(batch.next_position[r] - batch.position_ids[0, r, first_code]))
    assert (distances[0] == distances[1]) == (layout == "source_last")
    # the unconditional twins keep the conditional rows' lengths, so guidance pairs stay aligned
    assert [sum(len(s.ids) for s in row if isinstance(s, Text)) for row in rows[:2]] == \
        [sum(len(s.ids) for s in row if isinstance(s, Text)) for row in rows[2:]]


def test_unknown_edit_layout_is_named():
    from comfy_star.config import ARConfig
    with pytest.raises(ValueError, match="edit_layout 'sideways'"):
        ARConfig(edit_layout="sideways")


def test_answer_runs_with_and_without_image(tiny):
    from PIL import Image
    from comfy_star.ar.understand import answer, image_processor
    model, _, chat = tiny
    proc = image_processor(8, 2, 32)
    img = Image.new("RGB", (32, 32), (255, 0, 0))
    with_img = answer(model.base, chat, ["what colour?"], images=[img], proc=proc, max_new_tokens=4)
    text = answer(model.base, chat, ["what colour?"], max_new_tokens=4)
    assert isinstance(with_img[0], str) and isinstance(text[0], str)


def test_grown_stack_computes_what_the_shallow_one_did_and_can_learn(tiny):
    """Block expansion (`train all --stack-layers`): 2 → 4 layers, the same logits at the start;
    the new layers are not dead (their zeroed output projections get gradient)."""
    from comfy_star.ar.model import expand_stack_state, stack_depth
    model, codebook, chat = tiny
    model.eval()
    cfg = copy.deepcopy(tiny_ar_config())
    cfg.num_stacked_layers = 4
    deep = StackedAR(model.base, cfg, D_CODE, K, init="random")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("base.")}
    grown = expand_stack_state(state, 4)
    assert stack_depth(state) == 2 and stack_depth(grown) == 4
    missing, unexpected = deep.load_state_dict(grown, strict=False)
    assert not unexpected and not [k for k in missing if not k.startswith("base.")]
    batch = assemble(model, t2i_rows(chat, ["a red circle", "two blue squares"]), codebook)
    with torch.no_grad():
        shallow_logits = model(batch.embeds, batch.position_ids, batch.attention_mask)
        deep_logits = deep(batch.embeds, batch.position_ids, batch.attention_mask)
    assert torch.equal(deep_logits, shallow_logits)  # zeroed projections add exactly 0 to the residual
    deep.train()
    deep(batch.embeds, batch.position_ids, batch.attention_mask).logsumexp(-1).mean().backward()
    assert deep.stack.layers[3].mlp.down_proj.weight.grad.abs().sum() > 0
    assert deep.stack.layers[3].self_attn.o_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cannot shrink"):
        expand_stack_state(grown, 2)


def test_zero_cell_embeddings_change_nothing_and_trained_ones_tell_cells_apart(tiny):
    """A stack given zero cell embeddings (`train all --image-cells` on a stack trained without)
    computes what it did; set to values, the same code at two cells enters the stack differently.
    Beyond the grid they cover, the error names the grid."""
    model, codebook, chat = tiny
    model.eval()
    ar_cfg = tiny_ar_config()
    ar_cfg.image_cells = 4
    with_cells = StackedAR(build_base(ar_cfg, attn="eager"), ar_cfg, D_CODE, K).eval()
    missing, unexpected = with_cells.load_state_dict(model.state_dict(), strict=False)
    assert sorted(missing) == ["adapter.cell_cols", "adapter.cell_rows"] and not unexpected
    params = SampleParams(cfg=3.0, top_k=10)
    batch = assemble(model, t2i_rows(chat, ["two blue squares"]), codebook)
    ids = generate(model, batch, codebook, 10, params, torch.Generator().manual_seed(4))
    batch = assemble(with_cells, t2i_rows(chat, ["two blue squares"]), codebook)
    assert torch.equal(generate(with_cells, batch, codebook, 10, params, torch.Generator().manual_seed(4)), ids)
    with torch.no_grad():
        with_cells.adapter.cell_cols.normal_()
    one_code = codebook[torch.tensor([3, 3])]
    a, b = with_cells.embed_codes(one_code, torch.tensor([0, 1]))  # the same code, columns 0 and 1
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="4 × 4 grid"):
        with_cells.embed_codes(one_code, torch.tensor([0, 16]))
    with pytest.raises(ValueError, match="pass their index"):
        with_cells.embed_codes(one_code)
