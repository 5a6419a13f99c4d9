"""The run spec (hrta.spec): defaults, typed and immutable result, the round trip
parse_spec(spec.to_dict()) == spec over generated valid specs, and YAML/JSON loading.
(Every validation error is exercised through the command line in test_cli.py.)"""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hrta.spec import (
    LRScheduleSpec,
    ModelSpec,
    OptimizerSpec,
    RunSpec,
    SpecError,
    Stage,
    TaskSpec,
    load_spec,
    parse_spec,
)
from hrta.tasks import TASKS

MINIMAL = {"task": "sin1d", "homotopy": [{"s": 1.0, "steps": 10}],
           "optimizer": {"name": "sgd", "lr": 0.1}}


def test_minimal_spec_gets_every_default():
    spec = parse_spec(MINIMAL)
    assert spec == RunSpec(
        task=TaskSpec("sin1d", n_train=100, n_test=1000, noise=0.0),
        model=ModelSpec(width=1000, train=("W", "b", "a"), init_a="normal"),
        homotopy=(Stage(10, 1.0, 1.0, ramp=False),),
        optimizer=OptimizerSpec("sgd", 0.1, momentum=0.0, nesterov=False),
        lr_schedule=LRScheduleSpec("constant"),
        batch_size=None, reset_optimizer_each_stage=False, seed=0, dtype="float64",
        log_every=10, spec_version=1)
    assert spec.total_steps == 10
    adam = parse_spec({**MINIMAL, "optimizer": {"name": "adam", "lr": 1e-3}}).optimizer
    assert (adam.betas, adam.eps) == ((0.9, 0.999), 1e-8)


def test_spec_is_immutable_and_hashable():
    spec = parse_spec(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.optimizer.lr = 1.0  # type: ignore[misc]
    assert hash(spec) == hash(parse_spec(MINIMAL))


def test_the_spec_example_of_section_10_parses():
    text = """
spec_version: 1
task: sin1d
model: {width: 1000, train: [W, b, a], init_a: normal}
homotopy:
  - {s: 0.5, steps: 2000}
  - {s_from: 0.5, s_to: 1.0, steps: 1000}
  - {s: 1.0, steps: 7000}
optimizer: {name: adam, lr: 0.001, betas: [0.9, 0.999], eps: 1.0e-8}
lr_schedule: {name: constant}
batch_size: null
reset_optimizer_each_stage: false
seed: 0
dtype: float64
log_every: 10
"""
    spec = parse_spec(yaml.safe_load(text))
    assert spec.total_steps == 10000
    assert spec.homotopy[1] == Stage(1000, 0.5, 1.0, ramp=True)
    assert spec.optimizer == OptimizerSpec("adam", 0.001, betas=(0.9, 0.999), eps=1e-8)


def test_shorthands_and_normalisation():
    spec = parse_spec({**MINIMAL, "lr_schedule": "cosine",
                       "model": {"train": ["b", "W"]}})
    assert spec.lr_schedule == LRScheduleSpec("cosine", eta_min=0.0)
    assert spec.model.train == ("W", "b")  # canonical order
    assert parse_spec({**MINIMAL, "task": {"name": "sin1d"}}) == parse_spec(MINIMAL)
    # integers are accepted where numbers are expected, and stored as floats
    spec = parse_spec({**MINIMAL, "homotopy": [{"s": 1, "steps": 3}],
                       "optimizer": {"name": "sgd", "lr": 1}})
    assert isinstance(spec.homotopy[0].s_from, float) and isinstance(spec.optimizer.lr, float)


@pytest.mark.parametrize(("text", "field", "value"), [
    ("optimizer: {name: adam, lr: 1e-3}", "lr", 1e-3),
    ("optimizer: {name: adam, lr: 1E-3}", "lr", 1e-3),
    ("optimizer: {name: adam, lr: 2e-2, eps: 1e-8}", "eps", 1e-8),
    ("optimizer: {name: adam, lr: +5e-1}", "lr", 0.5),
    ("optimizer: {name: adam, lr: 1.0e-3}", "lr", 1e-3),
    ("optimizer: {name: adam, lr: .001}", "lr", 1e-3),
])
def test_yaml_exponent_floats_are_numbers(tmp_path, text, field, value):
    path = tmp_path / "spec.yaml"
    path.write_text("task: sin1d\nhomotopy: [{s: 1, steps: 2}]\n" + text + "\n")
    spec = load_spec(path)
    assert getattr(spec.optimizer, field) == value


def test_exponent_float_s_and_quoted_number_is_not_a_number(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("task: sin1d\nhomotopy: [{s: 1e0, steps: 2}]\n"
                    "optimizer: {name: sgd, lr: 1e-1}\n")
    assert load_spec(path).homotopy[0].s_from == 1.0
    path.write_text("task: sin1d\nhomotopy: [{s: 1, steps: 2}]\n"
                    "optimizer: {name: sgd, lr: '1e-1'}\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert err.value.path == "optimizer.lr"


def test_json_and_yaml_files_give_the_same_spec(tmp_path):
    doc = {**MINIMAL, "lr_schedule": {"name": "multistep", "milestones": [3, 6], "gamma": 0.5},
           "batch_size": 10, "dtype": "float32"}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(doc))
    assert load_spec(tmp_path / "a.json") == load_spec(tmp_path / "a.yaml") == parse_spec(doc)


# ---------------------------------------------------------------------------- round trip


S = st.floats(0.0, 2.0)
STAGES = st.lists(st.one_of(
    st.builds(lambda s, n: {"s": s, "steps": n}, S, st.integers(1, 10**6)),
    st.builds(lambda a, b, n: {"s_from": a, "s_to": b, "steps": n}, S, S, st.integers(1, 10**6)),
), min_size=1, max_size=4)
POSITIVE = st.floats(1e-12, 1e3)
OPTIMIZERS = st.one_of(
    st.builds(lambda lr: {"name": "sgd", "lr": lr}, POSITIVE),
    st.builds(lambda lr, mu, nest: {"name": "sgd", "lr": lr, "momentum": mu, "nesterov": nest},
              POSITIVE, st.floats(1e-6, 0.999), st.booleans()),
    st.builds(lambda lr, b1, b2, eps: {"name": "adam", "lr": lr, "betas": [b1, b2], "eps": eps},
              POSITIVE, st.floats(0.0, 0.999), st.floats(0.0, 0.9999), POSITIVE),
)
SCHEDULES = st.one_of(
    st.just({"name": "constant"}),
    st.builds(lambda n, g: {"name": "step", "step_size": n, "gamma": g},
              st.integers(1, 1000), POSITIVE),
    st.builds(lambda ms, g: {"name": "multistep", "milestones": sorted(ms), "gamma": g},
              st.sets(st.integers(1, 10**5), min_size=1, max_size=4), POSITIVE),
    st.builds(lambda g: {"name": "exponential", "gamma": g}, POSITIVE),
    st.builds(lambda e: {"name": "cosine", "eta_min": e}, st.floats(0.0, 1.0)),
)


@st.composite
def valid_documents(draw):
    n_train = draw(st.integers(2, 500))
    doc = {
        "task": {"name": draw(st.sampled_from(sorted(TASKS))), "n_train": n_train,
                 "n_test": draw(st.integers(1, 5000)), "noise": draw(st.floats(0.0, 2.0))},
        "model": {"width": draw(st.integers(1, 10**5)),
                  "train": draw(st.lists(st.sampled_from(["W", "b", "a"]), min_size=1,
                                         max_size=3, unique=True)),
                  "init_a": draw(st.sampled_from(["normal", "rademacher"]))},
        "homotopy": draw(STAGES),
        "optimizer": draw(OPTIMIZERS),
        "lr_schedule": draw(SCHEDULES),
        "batch_size": draw(st.one_of(st.none(), st.integers(1, n_train))),
        "reset_optimizer_each_stage": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**63)),
        "dtype": draw(st.sampled_from(["float64", "float32"])),
        "log_every": draw(st.integers(1, 10**4)),
    }
    # drop optional keys at random: defaults must fill them in
    for key in ("model", "lr_schedule", "batch_size", "reset_optimizer_each_stage", "seed",
                "dtype", "log_every"):
        if draw(st.booleans()):
            del doc[key]
    return doc


@settings(max_examples=100, deadline=None)
@given(doc=valid_documents())
def test_round_trip_through_to_dict_json_and_yaml(doc):
    spec = parse_spec(doc)
    assert parse_spec(spec.to_dict()) == spec
    assert parse_spec(json.loads(json.dumps(spec.to_dict()))) == spec
    assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec
    assert parse_spec(spec.to_dict()).digest() == spec.digest()
    assert spec.total_steps == sum(stage["steps"] for stage in doc["homotopy"])
    # the resolved dict is complete: every top-level key present
    assert set(spec.to_dict()) == {"spec_version", "task", "model", "homotopy", "optimizer",
                                   "lr_schedule", "batch_size", "reset_optimizer_each_stage",
                                   "seed", "dtype", "log_every"}


def test_digest_distinguishes_specs():
    a = parse_spec(MINIMAL)
    b = parse_spec({**MINIMAL, "seed": 1})
    assert a.digest() == parse_spec(dict(MINIMAL)).digest() and a.digest() != b.digest()


def test_spec_error_is_one_line_with_path_and_expected():
    with pytest.raises(SpecError) as err:
        parse_spec({**MINIMAL, "homotopy": [{"s": 1, "steps": 2}, {"s": 3.5, "steps": 2}]})
    assert err.value.path == "homotopy[1].s"
    assert str(err.value) == "homotopy[1].s: expected a number in [0, 2], got 3.5"
