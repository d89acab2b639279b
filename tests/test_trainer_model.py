"""The decoder, LR schedules and checkpoint files, with a tiny model on CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from midmix.errors import MidmixError
from midmix.lr import LrSegment
from midmix.trainer.checkpoint import list_checkpoints, load_latest, save_checkpoint
from midmix.trainer.config import TrainConfig, load_train_config
from midmix.rope import RopeScaling
from midmix.trainer.attention import DocumentLayout
from midmix.trainer.model import Decoder, ModelConfig, check_seq_len, rotary_tables
from midmix.trainer.schedule import PhaseLr, lr_at

TINY = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, max_seq_len=32)


def tiny_model(**overrides) -> Decoder:
    torch.manual_seed(0)
    return Decoder(TINY.model_copy(update=overrides)).eval()


def test_token_output_ignores_other_documents_in_the_sequence():
    model = tiny_model()
    doc_ids = torch.tensor([[0] * 6 + [1] * 10])
    position_ids = torch.tensor([list(range(6)) + list(range(10))])
    ids = torch.randint(0, 50, (1, 16), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[0, :6] = (changed[0, :6] + 7) % 50  # rewrite the first document only
    with torch.no_grad():
        before = model(ids, position_ids, doc_ids)
        after = model(changed, position_ids, doc_ids)
    assert torch.equal(before[0, 6:], after[0, 6:])
    assert not torch.allclose(before[0, :6], after[0, :6])


def test_document_alone_gives_same_output_as_packed_after_another():
    model = tiny_model()
    doc = torch.randint(0, 50, (1, 10), generator=torch.Generator().manual_seed(2))
    other = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(3))
    packed = torch.cat([other, doc], dim=1)
    doc_ids = torch.tensor([[0] * 6 + [1] * 10])
    position_ids = torch.tensor([list(range(6)) + list(range(10))])
    with torch.no_grad():
        alone = model(doc)
        inside = model(packed, position_ids, doc_ids)[:, 6:]
    torch.testing.assert_close(alone, inside, rtol=1e-5, atol=1e-5)


def test_causal_mask_future_tokens_do_not_change_past_outputs():
    model = tiny_model()
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(4))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 50
    with torch.no_grad():
        assert torch.equal(model(ids)[0, :8], model(changed)[0, :8])


def test_set_rope_rebuilds_tables_for_new_theta_and_changes_outputs():
    model = tiny_model()
    ids = torch.randint(0, 50, (1, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        base = model(ids)
        model.set_rope(500000.0, 16)
        long_theta = model(ids)
    cos, sin = rotary_tables(500000.0, 8, 16)
    assert torch.equal(model.rope_cos, cos) and torch.equal(model.rope_sin, sin)
    assert model.rope_cos.shape == (16, 4)
    assert not torch.allclose(base, long_theta)
    # Position 0 has angle 0 for every theta, so the first token's output is unchanged.
    torch.testing.assert_close(base[0, 0], long_theta[0, 0])
    with torch.no_grad():
        fresh = tiny_model(rope_theta=500000.0)(ids)
    torch.testing.assert_close(fresh, long_theta)


def test_seq_len_beyond_max_is_refused_with_the_fix():
    model = tiny_model()
    with pytest.raises(MidmixError, match="exceeds the model's max_seq_len 32; raise model.max_seq_len to at least 64"):
        model.set_rope(10000.0, 64)
    with pytest.raises(MidmixError, match="max_seq_len"):
        check_seq_len(33, TINY)


def test_tied_embeddings_share_one_tensor():
    tied, untied = tiny_model(), tiny_model(tie_embeddings=False)
    assert tied.head.weight is tied.embed.weight
    assert untied.num_params() - tied.num_params() == 50 * 32


def test_model_config_rejects_heads_that_do_not_divide():
    with pytest.raises(ValueError, match="multiple of n_heads"):
        ModelConfig(vocab_size=10, d_model=30, n_heads=4)


# --- schedules -------------------------------------------------------------------------------

PEAK = 1e-3


def test_wsd_values_at_every_boundary():
    phase = PhaseLr(steps=20, segment=LrSegment.wsd(warmup=0.1, decay=0.25, shape="linear", final_lr_ratio=0.1))
    lrs = [lr_at(step, [phase], PEAK) for step in range(20)]
    assert lrs[0] == pytest.approx(0.5e-3)  # warmup 2 steps from 0: 1/2, 2/2
    assert lrs[1] == pytest.approx(1e-3)
    assert lrs[2:15] == [PEAK] * 13  # stable
    # decay 5 steps from peak to 1e-4: progress 1/5..5/5
    assert lrs[15:] == pytest.approx([1e-4 + 9e-4 * (1 - k / 5) for k in range(1, 6)])
    assert lrs[19] == pytest.approx(1e-4)


def test_decay_shapes_cosine_and_one_minus_sqrt():
    cosine = PhaseLr(steps=4, segment=LrSegment.cosine(warmup=0.0, final_lr_ratio=0.0))
    assert [lr_at(s, [cosine], PEAK) for s in range(4)] == pytest.approx(
        [PEAK * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(1, 5)]
    )
    sqrt = PhaseLr(steps=4, segment=LrSegment(warmup=0, stable=0, decay=1, shape="1-sqrt", final_lr_ratio=0.2))
    assert [lr_at(s, [sqrt], PEAK) for s in range(4)] == pytest.approx(
        [2e-4 + 8e-4 * (1 - math.sqrt(k / 4)) for k in range(1, 5)]
    )


def test_constant_schedule_is_flat_after_warmup():
    phase = PhaseLr(steps=10, segment=LrSegment.constant(warmup=0.2))
    assert [lr_at(s, [phase], PEAK) for s in range(10)] == pytest.approx([0.5e-3] + [1e-3] * 9)


def test_later_phase_rewarms_from_previous_end_and_decays_again():
    first = PhaseLr(steps=10, segment=LrSegment.wsd(warmup=0.0, decay=0.5, final_lr_ratio=0.1))
    second = PhaseLr(steps=8, segment=LrSegment.wsd(warmup=0.25, decay=0.5, final_lr_ratio=0.0))
    phases = [first, second]
    assert lr_at(9, phases, PEAK) == pytest.approx(1e-4)  # end of first decay
    assert lr_at(10, phases, PEAK) == pytest.approx(1e-4 + 9e-4 / 2)  # rewarm 2 steps from 1e-4
    assert lr_at(11, phases, PEAK) == pytest.approx(PEAK)
    assert lr_at(13, phases, PEAK) == pytest.approx(PEAK)
    assert [lr_at(s, phases, PEAK) for s in range(14, 18)] == pytest.approx([7.5e-4, 5e-4, 2.5e-4, 0.0])
    with pytest.raises(ValueError, match="past the schedule's 18 steps"):
        lr_at(18, phases, PEAK)


def test_phase_without_warmup_continues_at_peak_from_stable_phase():
    stable = PhaseLr(steps=5, segment=LrSegment.constant())
    anneal = PhaseLr(steps=4, segment=LrSegment.wsd(warmup=0.0, decay=1.0, final_lr_ratio=0.0))
    assert [lr_at(s, [stable, anneal], PEAK) for s in range(9)] == pytest.approx(
        [PEAK] * 5 + [7.5e-4, 5e-4, 2.5e-4, 0.0]
    )


def test_lr_segment_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="must sum to 1"):
        LrSegment(warmup=0.5, stable=0.6, decay=0.0)


# --- checkpoint files ------------------------------------------------------------------------


def test_checkpoints_are_written_whole_and_pruned_to_keep(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, {"step": step, "weights": torch.arange(3)}, keep=2)
    assert [path.name for path in list_checkpoints(tmp_path)] == ["step-00000004.pt", "step-00000006.pt"]
    (tmp_path / "step-00000008.pt.tmp").write_bytes(b"half written")
    latest = load_latest(tmp_path)
    assert latest["step"] == 6 and torch.equal(latest["weights"], torch.arange(3))
    assert load_latest(tmp_path / "missing") is None


# --- config ----------------------------------------------------------------------------------


def test_config_file_paths_are_taken_from_its_folder(tmp_path):
    (tmp_path / "train.yaml").write_text("mixture: mix-1\nout_dir: runs/a\ncheckpoint: {every: 5}\n", encoding="utf-8")
    config = load_train_config(tmp_path / "train.yaml")
    assert config.out_dir == tmp_path / "runs" / "a"
    assert config.checkpoint_dir == tmp_path / "runs" / "a" / "checkpoints"
    assert config.cache_dir == tmp_path / "runs" / "a" / "cache"
    assert config.accumulation_steps(world_size=2) == 2  # 32 / (8 x 2)
    moved = config.with_overrides(out_dir=tmp_path / "b")
    assert moved.checkpoint_dir == tmp_path / "b" / "checkpoints"


def test_config_errors_say_what_to_fix(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("global_batch_size: 12\nmicro_batch_size: 8\n", encoding="utf-8")
    with pytest.raises(MidmixError, match="global_batch_size 12 must be a multiple of micro_batch_size 8"):
        load_train_config(path)
    path.write_text("model: {d_model: [\n", encoding="utf-8")
    with pytest.raises(MidmixError, match="is not valid YAML"):
        load_train_config(path)
    with pytest.raises(MidmixError, match="training config not found"):
        load_train_config(tmp_path / "missing.yaml")
    with pytest.raises(MidmixError, match="not a multiple of micro_batch_size 8 x world size 3"):
        TrainConfig(global_batch_size=16, micro_batch_size=8).accumulation_steps(3)


def test_example_training_config_is_valid_and_fits_the_demo_mixture():
    repo = Path(__file__).resolve().parents[1]
    config = load_train_config(repo / "examples" / "train-demo.yaml")
    assert config.mixture is None  # scripts/demo.sh passes --mixture
    demo_seq_lens = [int(line.split(":")[1]) for line in (repo / "examples" / "demo-mixture.yaml").read_text().splitlines()
                     if line.strip().startswith("seq_len:")]
    assert max(demo_seq_lens) == config.model.max_seq_len == 2048
    assert config.accumulation_steps(world_size=1) == 2


def test_manifest_phase_lr_segment_is_read_or_refused_with_the_fix():
    from midmix.trainer.train import phase_segment

    lr = {"warmup": 0.1, "stable": 0.8, "decay": 0.1, "shape": "cosine", "final_lr_ratio": 0.1}
    assert phase_segment({"name": "stable", "lr": lr}) == LrSegment.wsd(0.1, 0.1, "cosine", 0.1)
    with pytest.raises(MidmixError, match="phase 'anneal' of the mixture has an invalid lr segment"):
        phase_segment({"name": "anneal", "lr": {"warmup": 0.5, "stable": 0.9, "decay": 0.0}})


# --- document attention and RoPE scaling ------------------------------------------------------


def _dense_reference(q, k, v, doc_ids):
    """The dense-mask attention the kernels replace: causal and within the same document."""
    length = doc_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    mask = (doc_ids[:, :, None] == doc_ids[:, None, :]) & causal
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])


def test_varlen_attention_equals_the_dense_document_mask_forward_and_backward():
    generator = torch.Generator().manual_seed(7)
    doc_ids = torch.tensor([[0] * 5 + [1] * 9 + [2] * 18, [3] * 32, [4] * 9 + [5] * 5 + [6] * 18, [7] * 1 + [8] * 31])
    q, k, v = (torch.randn(4, 2, 32, 8, generator=generator, requires_grad=True) for _ in range(3))
    layout = DocumentLayout.build(doc_ids, "varlen")
    assert sorted(group.shape[1] for group in layout.groups) == [1, 5, 9, 18, 31, 32]  # one call per run length
    ours = layout.attend(q, k, v)
    reference = _dense_reference(q, k, v, doc_ids)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    weights = torch.randn(ours.shape, generator=generator)
    ours_grads = torch.autograd.grad((ours * weights).sum(), (q, k, v))
    reference_grads = torch.autograd.grad((reference * weights).sum(), (q, k, v))
    for got, expected in zip(ours_grads, reference_grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_a_document_split_over_two_rows_is_two_runs():
    doc_ids = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 2]])  # document 1 continues from row 0 into row 1
    layout = DocumentLayout.build(doc_ids, "varlen")
    runs = sorted(index.tolist() for group in layout.groups for index in group)
    assert runs == [[0, 1], [2, 3], [4, 5, 6], [7]]


def test_flex_block_mask_from_tile_ranges_matches_create_block_mask_and_varlen():
    """Our O((L/128)^2) block mask has the tiles create_block_mask finds by evaluating all L^2 pairs,
    and FlexAttention with it (forward; CPU has no backward) equals varlen attention."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from midmix.trainer.attention import _block_mask

    generator = torch.Generator().manual_seed(10)
    for lengths in ([100, 156, 300, 468], [1, 127, 129, 255, 400]):
        doc_ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))[None].repeat(2, 1)
        doc_ids[1] = torch.repeat_interleave(torch.tensor([7, 8, 9]), torch.tensor([300, 300, sum(lengths) - 600]))
        length = doc_ids.shape[1]
        ours = _block_mask(doc_ids)
        reference = create_block_mask(
            lambda b, h, q, k: (q >= k) & (doc_ids[b, q] == doc_ids[b, k]), 2, None, length, length, device="cpu"
        )
        assert torch.equal(ours.kv_num_blocks, reference.kv_num_blocks)
        assert torch.equal(ours.full_kv_num_blocks, reference.full_kv_num_blocks)
        assert torch.equal(ours.to_dense(), reference.to_dense())
        q, k, v = (torch.randn(2, 2, length, 16, generator=generator) for _ in range(3))
        varlen = DocumentLayout.build(doc_ids, "varlen").attend(q, k, v)
        torch.testing.assert_close(flex_attention(q, k, v, block_mask=ours), varlen, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_flex_attention_equals_varlen_on_cuda():
    generator = torch.Generator().manual_seed(8)
    doc_ids = torch.tensor([[0] * 100 + [1] * 156, [2] * 256]).cuda()
    q, k, v = (torch.randn(2, 2, 256, 16, generator=generator).cuda() for _ in range(3))
    flex = DocumentLayout.build(doc_ids, "flex").attend(q, k, v)
    varlen = DocumentLayout.build(doc_ids, "varlen").attend(q, k, v)
    torch.testing.assert_close(flex, varlen, rtol=2e-3, atol=2e-3)


def test_yarn_keeps_fast_pairs_interpolates_slow_ones_and_scales_the_tables():
    scaling = RopeScaling(factor=4, original_seq_len=64)
    plain_cos, plain_sin = rotary_tables(10000.0, 32, 256)
    cos, sin = rotary_tables(10000.0, 32, 256, scaling)
    gain = 0.1 * math.log(4) + 1
    # Pair 0 turns 64/(2 pi) = 10 times over 64 tokens: between beta_slow 1 and beta_fast 32, blended.
    angle = torch.atan2(sin / gain, cos / gain)
    plain_angle = torch.atan2(plain_sin, plain_cos)
    torch.testing.assert_close(cos[:, 0] ** 2 + sin[:, 0] ** 2, torch.full((256,), gain**2))
    # The slowest pair (turns << 1) is slowed 4x: its angle at position 4p equals the plain angle at p.
    torch.testing.assert_close(angle[4 * 30, -1], plain_angle[30, -1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(angle[:, 0], plain_angle[:, 0]) and not torch.allclose(angle[100, 0] * 4, plain_angle[100, 0])


def test_set_rope_with_yarn_rebuilds_the_tables():
    model = tiny_model()
    ids = torch.randint(0, 50, (1, 16), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        plain = model(ids)
        model.set_rope(10000.0, 16, RopeScaling(factor=2, original_seq_len=8))
        scaled = model(ids)
    cos, _ = rotary_tables(10000.0, 8, 16, RopeScaling(factor=2, original_seq_len=8))
    assert torch.equal(model.rope_cos, cos)
    assert not torch.allclose(plain, scaled)
