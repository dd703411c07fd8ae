"""``flashbench.method.adapters``: the teacher's adapter switch and the merged student for sampling.

The switch flips peft's per-layer flag instead of walking the model: the teacher's passes must still be the
base network's, nested switches must restore what they found, and a new or deleted adapter must be seen.
Merging folds the LoRA into the base weights for sampling: the same samples as the unmerged student, no LoRA
branch computed, and the teacher's base weights back bit for bit afterwards (also after an error, and after a
teacher pass inside the merged block).
"""

from __future__ import annotations

import pytest
import torch

from flashbench.method import adapters

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_teacher():
    from flashbench.plugins import collect_components

    return collect_components().get("teacher", "toy-digits").build({}, device="cpu")


@pytest.fixture()
def student(toy_teacher):
    """A LoRA on the toy teacher with non-zero weights (a fresh LoRA's B is zero: it would change nothing)."""
    torch.manual_seed(0)
    params = toy_teacher.add_lora("s", 4)
    g = torch.Generator().manual_seed(1)
    for p in params:
        p.data = torch.randn(p.shape, generator=g) * 0.05
    yield toy_teacher, params
    toy_teacher.remove_lora("s")


def inputs(teacher, batch=3, seed=0):
    from flashbench_plugins.toy.data import all_prompts

    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *teacher.latent_shape), generator=g)
    t = torch.tensor([999, 499, 249][:batch])
    return x, t, teacher.encode_prompts(all_prompts()[:batch])


def base_weights(teacher) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in teacher.denoiser.state_dict().items() if "lora_" not in k}


def lora_branch_calls(teacher):
    """A counter of forward calls of the LoRA A matrices (the adapter branch)."""
    calls = []
    handles = [
        m.register_forward_hook(lambda *a: calls.append(1))
        for n, m in teacher.denoiser.named_modules()
        if "lora_A" in n and isinstance(m, torch.nn.Linear | torch.nn.Conv2d)
    ]
    return calls, handles


def test_the_teacher_pass_is_the_base_network_and_the_student_pass_is_not(toy_teacher):
    x, t, cond = inputs(toy_teacher)
    with torch.no_grad():
        base = toy_teacher.eps(x, t, cond, student=False)
    torch.manual_seed(0)
    params = toy_teacher.add_lora("s", 4)
    try:
        for p in params:
            p.data.normal_(0, 0.05)
        with torch.no_grad():
            teacher = toy_teacher.eps(x, t, cond, student=False)
            student = toy_teacher.eps(x, t, cond, student=True)
        assert torch.equal(teacher, base)  # the adapters are really off: bit for bit the base network
        assert not torch.allclose(student, base, atol=1e-4)  # and really on for the student
        assert all(p.requires_grad for p in params)  # the switch leaves the optimiser's parameters trainable
    finally:
        toy_teacher.remove_lora("s")
    with torch.no_grad():
        assert torch.equal(toy_teacher.eps(x, t, cond, student=True), base)  # deleted adapter: the list was rebuilt


def test_adapters_off_restores_each_layers_own_state(student):
    teacher, _ = student
    layers = teacher.adapter_layers()
    assert layers and all(not layer.disable_adapters for layer in layers)
    layers[0]._disable_adapters = True  # one layer already off before the block
    try:
        with adapters.adapters_off(layers):
            assert all(layer.disable_adapters for layer in layers)
            with adapters.adapters_off(layers):  # nested
                pass
            assert all(layer.disable_adapters for layer in layers)
        assert layers[0].disable_adapters and not any(layer.disable_adapters for layer in layers[1:])
    finally:
        layers[0]._disable_adapters = False
    with pytest.raises(RuntimeError), adapters.adapters_off(layers):
        raise RuntimeError("restored on the way out")
    assert not any(layer.disable_adapters for layer in layers)


def test_the_layer_cache_follows_the_set_of_adapters(student):
    teacher, _ = student
    first = teacher.adapter_layers()
    assert teacher.adapter_layers() is first  # found once
    torch.manual_seed(1)
    teacher.add_lora("other", 2)
    try:
        assert teacher.adapter_layers() is not first and adapters.adapter_names(teacher.denoiser) == ("s", "other")
    finally:
        teacher.remove_lora("other")
    assert adapters.adapter_names(teacher.denoiser) == ("s",)


def test_merged_student_samples_like_the_unmerged_one_without_the_lora_branch(student):
    from flashbench.method.sampling import student_sample

    teacher, _ = student
    x, _, cond = inputs(teacher)
    before = base_weights(teacher)
    calls, handles = lora_branch_calls(teacher)
    try:
        unmerged = student_sample(teacher, cond, x, 4, torch.Generator().manual_seed(3), merge_lora=False)
        n_unmerged = len(calls)
        calls.clear()
        merged = student_sample(teacher, cond, x, 4, torch.Generator().manual_seed(3))
    finally:
        for h in handles:
            h.remove()
    assert n_unmerged > 0 and calls == []  # the adapter branches ran unmerged, and not at all merged
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    after = base_weights(teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the teacher's weights, bit for bit
    assert not any(layer.merged for layer in teacher.adapter_layers())


def test_merged_restores_the_weights_after_an_error_and_after_a_teacher_pass(student):
    teacher, _ = student
    x, t, cond = inputs(teacher)
    before = base_weights(teacher)
    with torch.no_grad():
        reference = teacher.eps(x, t, cond, student=False)
        with teacher.merged_student():
            # peft unmerges (in place, on the merged copy) for a pass with the adapters off: still the teacher
            torch.testing.assert_close(teacher.eps(x, t, cond, student=False), reference, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError), teacher.merged_student():
        raise RuntimeError("restored on the way out")
    after = base_weights(teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(teacher.eps(x, t, cond, student=False), reference)


def test_merged_leaves_switched_off_layers_alone(student):
    teacher, _ = student
    with teacher.adapters_disabled(), adapters.merged(teacher.adapter_layers()) as n:
        assert n == 0
    with adapters.merged(teacher.adapter_layers()) as n:
        assert n == len(teacher.adapter_layers())


def test_half_precision_weights_keep_their_lora_branch():
    """bf16 has 8 significant bits: W + s B A would lose most of a small delta, so such layers stay unmerged."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=2, target_modules=["0", "1"], init_lora_weights="gaussian"), model)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.1)  # a fresh LoRA's B is zero: merging it would change nothing
    layers = adapters.tuner_layers(model)
    layers[1].get_base_layer().to(torch.bfloat16)
    before = [layer.get_base_layer().weight.detach().clone() for layer in layers]
    with torch.no_grad(), adapters.merged(layers) as n:
        assert n == 1 and layers[0].merged and not layers[1].merged
        assert not torch.equal(layers[0].get_base_layer().weight, before[0])
    assert all(torch.equal(layer.get_base_layer().weight, b) for layer, b in zip(layers, before))
    assert not any(layer.merged for layer in layers)
