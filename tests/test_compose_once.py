"""The batched launcher's configs: derived from one composition per group choices, equal to Hydra's own."""

import pytest
from conftest import CONF_DIR
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from harness.sweep.grid import canonical_grid
from hydra_plugins.harness_batched.compose import Composer

JOBS = [
    ["optimizer=adam", "optimizer.lr=0.1", "seed=2"],
    ["optimizer=adam", "optimizer.lr=0.3", "seed=0", "optimizer.betas=[0.8,0.9]"],
    ["optimizer=sgd", "optimizer.momentum=0.9", "data.batch_size=full"],
    ["task=digits_mlp", "optimizer=sgd", "trainer.epochs=2", "+task.kwargs.hidden=64"],
    ["scheduler=cosine", "optimizer=sgd", "optimizer.lr_scale=3"],
]


@pytest.fixture
def hydra_loader():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        yield loader, loader.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)


def hydra_job_config(loader, master, overrides):
    full = loader.load_sweep_config(master, list(overrides))
    return OmegaConf.to_container(OmegaConf.masked_copy(full, [k for k in full if k != "hydra"]))


def hydra_config_or_refusal(loader, master, composer, overrides):
    """Hydra's config for the job; None when Hydra refuses it, after checking that the composer refuses it too."""
    try:
        return hydra_job_config(loader, master, overrides)
    except ConfigCompositionException:
        with pytest.raises(ConfigCompositionException):
            composer.job_config(overrides)
        return None


def test_a_derived_config_is_the_config_hydra_composes(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    for overrides in JOBS:
        expected = hydra_config_or_refusal(loader, master, composer, overrides)
        if expected is None:
            continue
        assert OmegaConf.to_container(composer.job_config(overrides)) == expected, overrides
    # One composition per distinct group choices: adam, sgd, digits_mlp+sgd, cosine+sgd.
    assert len(composer._full) == 4
    assert composer.split(JOBS[3]).structural == ("task=digits_mlp", "optimizer=sgd")


def test_grid_jobs_that_share_one_copy_are_each_the_config_hydra_composes(hydra_loader):
    """Jobs assigning plain values to the same keys share one copy (each overwrites the last); a job with other keys,
    a list, an addition or a refused value gets a fresh copy, and what came before leaks into no job."""
    loader, master = hydra_loader
    composer = Composer(loader, master)
    jobs = [
        ["optimizer=adam", "optimizer.lr=0.1", "seed=2", "data.batch_size=32"],
        ["optimizer=adam", "optimizer.lr=0.3", "seed=0", "data.batch_size=full"],
        ["optimizer=adam", "optimizer.lr=abc", "seed=1", "data.batch_size=8"],  # refused midway
        ["optimizer=adam", "optimizer.lr=0.01", "seed=1", "data.batch_size=8"],
        ["optimizer=adam", "optimizer.lr=0.01"],  # fewer keys: seed and batch size as composed
        ["optimizer=adam", "optimizer.lr=0.02", "optimizer.betas=[0.8,0.9]"],  # a list
        ["optimizer=adam", "optimizer.lr=0.03", "+task.kwargs.hidden=64"],  # an addition
        ["optimizer=adam", "optimizer.lr=0.04"],
        ["optimizer=sgd", "optimizer.lr=0.5", "seed=3", "data.batch_size=1"],
        ["optimizer=adam", "optimizer.lr=0.05", "seed=4", "data.batch_size=2"],
    ]
    shared = 0
    for overrides in jobs:
        expected = hydra_config_or_refusal(loader, master, composer, overrides)
        if expected is None:
            continue
        before = composer._scratch.get(composer.split(overrides).structural)
        derived = composer.job_config(overrides)
        shared += before is not None and derived is before[0]
        assert OmegaConf.to_container(derived) == expected, overrides
    assert shared == 2  # job 2 reuses job 1's copy, job 8 job 5's (a refused value drops its copy)


def test_a_value_of_the_wrong_type_is_refused_as_hydra_refuses_it(hydra_loader):
    loader, master = hydra_loader
    composer = Composer(loader, master)
    with pytest.raises(ConfigCompositionException) as derived:
        composer.job_config(["optimizer.lr=abc"])
    with pytest.raises(ConfigCompositionException) as composed:
        composer.validate([["optimizer.lr=0.1"], ["optimizer.lr=abc"]])
    assert "optimizer.lr" in str(derived.value.__cause__ or derived.value)
    assert "optimizer.lr" in str(composed.value.__cause__ or composed.value)


def test_the_grid_key_ignores_the_order_things_were_typed_in():
    assert canonical_grid(["optimizer=sgd,adam", "seed=0,1"]) == canonical_grid(
        ["seed=1,0", "optimizer=adam,sgd"]
    )
    assert canonical_grid(["seed=range(0,3)"]) == canonical_grid(["seed=2,0,1"])
    assert canonical_grid(["seed=0,1"]) != canonical_grid(["seed=0,2"])
    assert canonical_grid(["seed=0", "seed=1,2"]) == canonical_grid(
        ["seed=2,1"]
    )  # the last one wins, as in Hydra
