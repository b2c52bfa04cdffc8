"""A LadderModel behaves like the transformers/PEFT models users know: ``.config`` is the backbone's, forward takes
the common options, ``from_pretrained(directory)`` loads its own backbone, ``generate`` takes transformers' options."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_backbone, tiny_batch
from test_generation import _model, _prompts, _uncached_greedy
from transformers import (
    DynamicCache,
    GenerationConfig,
    PretrainedConfig,
    StoppingCriteria,
    StoppingCriteriaList,
)

from laddertune import CheckpointError, LadderConfig, LadderModel, get_ladder_model
from laddertune.core.backbones import load_backbone


def _cls_model(num_labels=3):
    return get_ladder_model(tiny_backbone("bert", "sequence_classification", num_labels=num_labels)).eval()


def test_config_is_the_backbone_config_and_old_names_forward_with_a_warning():
    model = _cls_model()
    assert isinstance(model.config, PretrainedConfig)
    assert model.config.num_labels == 3 and model.config.hidden_size == 32
    assert model.ladder_config.reduction_factor == 8
    with pytest.warns(FutureWarning, match="ladder_config"):
        assert model.config.reduction_factor == 8
    with pytest.raises(AttributeError):
        model.config.no_such_field  # noqa: B018


def test_forward_return_dict_false_gives_the_tuple_and_hidden_states_are_refused_by_name():
    model = _cls_model(num_labels=2)
    batch = tiny_batch("bert", "sequence_classification")
    out = model(**batch)
    loss, logits = model(**batch, return_dict=False)
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits)
    for name in ("output_hidden_states", "output_attentions"):
        with pytest.raises(ValueError, match=name):
            model(**batch, **{name: True})


def test_from_pretrained_without_a_backbone_loads_the_recorded_one(tmp_path):
    tiny_backbone("bert", "sequence_classification", num_labels=3).save_pretrained(tmp_path / "bb")
    backbone = load_backbone(str(tmp_path / "bb"), "sequence_classification")
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4)).eval()
    torch.nn.init.normal_(model.side.head[0].weight)
    model.save_pretrained(tmp_path / "side")
    loaded = LadderModel.from_pretrained(tmp_path / "side").eval()
    assert loaded.config.num_labels == 3
    batch = tiny_batch("bert", "sequence_classification", num_labels=3)
    assert torch.allclose(loaded(**batch).logits, model(**batch).logits)


def test_a_mismatched_head_is_a_one_line_error(tmp_path):
    _cls_model(num_labels=3).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="3 labels.*num_labels=2") as e:
        LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification", num_labels=2), tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="sequence_classification head.*causal_lm head") as e:
        LadderModel.from_pretrained(tiny_backbone("llama", "causal_lm"), tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("family", "head"), [("t5", "seq2seq_lm"), ("llama", "causal_lm")])
def test_greedy_through_generation_config_equals_the_uncached_greedy(family, head):
    model = _model(family, head)
    ids, mask = _prompts(family)
    config = GenerationConfig(do_sample=False, max_new_tokens=5, min_new_tokens=5)
    assert torch.equal(
        model.generate(ids, mask, generation_config=config), _uncached_greedy(model, ids, mask, 5)
    )
    # top_k=1 sampling IS greedy: proves the warpers run on the scores
    sampled = model.generate(ids, mask, do_sample=True, top_k=1, max_new_tokens=5, min_new_tokens=5)
    assert torch.equal(sampled, _uncached_greedy(model, ids, mask, 5))


def test_sampling_with_a_fixed_seed_is_reproducible_and_differs_across_seeds():
    model = _model("llama", "causal_lm")
    ids, mask = _prompts("llama")
    kw = dict(
        do_sample=True,
        temperature=2.0,
        top_p=0.95,
        max_new_tokens=8,
        min_new_tokens=8,
        num_return_sequences=3,
    )
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(model.generate(ids, mask, **kw))
    assert runs[0].shape == (6, 5 + 8)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_repetition_penalty_max_length_and_stopping_criteria():
    model = _model("llama", "causal_lm")
    ids, mask = _prompts("llama")
    out = model.generate(ids, mask, max_length=9, min_length=9)
    assert out.shape == (2, 9)
    penalised = model.generate(ids, mask, max_new_tokens=8, repetition_penalty=1e6, min_new_tokens=8)
    for row in penalised[:, 5:].tolist():  # an enormous penalty never repeats a token
        assert len(set(row)) == len(row)

    class StopAfter(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= 7, dtype=torch.bool)

    stopped = model.generate(
        ids, mask, max_new_tokens=8, stopping_criteria=StoppingCriteriaList([StopAfter()])
    )
    assert stopped.shape[1] == 7


def test_unknown_or_refused_options_are_errors_never_ignored():
    model = _model("llama", "causal_lm")
    ids, mask = _prompts("llama")
    with pytest.raises(ValueError, match="no_such_option"):  # transformers' own check of unused model kwargs
        model.generate(ids, mask, no_such_option=1)
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate(ids, mask, num_return_sequences=2)  # greedy returns one sequence per prompt
    with pytest.raises(ValueError, match="cache_implementation='static'"):
        model.generate(ids, mask, cache_implementation="static")
    with pytest.raises(ValueError, match="LadderCache"):  # one network's cache cannot hold both
        model.generate(ids, mask, past_key_values=DynamicCache())


def test_right_padded_causal_prompts_generate_as_each_prompt_alone():
    model = _model("llama", "causal_lm")
    ids = torch.tensor([[5, 9, 13, 22, 7], [31, 40, 11, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # right padding, as SmolLM2's tokenizer pads
    out = model.generate(ids, mask, max_new_tokens=4, min_new_tokens=4)
    alone = model.generate(ids[1:, :3], mask[1:, :3], max_new_tokens=4, min_new_tokens=4)
    assert torch.equal(out[1, -4:], alone[0, -4:])
    assert out[1, :2].tolist() == [0, 0]  # the prompt comes back left-padded, as transformers returns it


def test_ladder_model_is_a_pretrained_model_of_its_backbone_head_class():
    import copy

    from transformers import PreTrainedModel

    from laddertune import ConfigError, LadderModelForCausalLM, LadderModelForSeq2SeqLM

    cases = [
        ("t5", "seq2seq_lm", LadderModelForSeq2SeqLM),
        ("llama", "causal_lm", LadderModelForCausalLM),
        ("bert", "sequence_classification", LadderModel),
    ]
    for family, head, cls in cases:
        model = LadderModel(tiny_backbone(family, head), LadderConfig(reduction_factor=4))
        assert type(model) is cls and isinstance(model, PreTrainedModel)
        assert model.can_generate() == (head != "sequence_classification")
        assert type(copy.deepcopy(model)) is cls
    with pytest.raises(ConfigError, match="LadderModelForCausalLM cannot hold"):
        LadderModelForCausalLM(tiny_backbone("bert", "sequence_classification"), LadderConfig())


def test_a_side_only_state_dict_loads_into_the_side_network():
    """What transformers.Trainer does on resume: load_state_dict(strict=False) of ladder_model.safetensors's keys."""
    model, other = _cls_model(), _cls_model()
    torch.nn.init.normal_(other.side.head[0].weight)
    result = model.load_state_dict(other.side.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) == model._keys_to_ignore_on_save  # every backbone key, and only those
    assert torch.equal(model.side.head[0].weight, other.side.head[0].weight)
    full = model.state_dict()  # a LadderModel's own keys load as usual
    assert {k.split(".")[0] for k in full} == {"backbone", "side"}
    model.load_state_dict(full, strict=True)
