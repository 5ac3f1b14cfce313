"""The Ray engine's GPU actors: the device an actor loads its model on. Inside an actor given GPUs, Ray shows
only those, from cuda:0: device=cuda:N is the actor's own GPU, never the Nth of the machine."""

from __future__ import annotations

import pytest

from diplostance.labelling.options import LabellingError
from diplostance.labelling.ray_engine import actor_device


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3", "CUDA:1", "auto", None])
@pytest.mark.parametrize("gpus", [1, 0.5, 2])
def test_an_actor_given_gpus_runs_on_its_own_first_gpu(device, gpus):
    assert actor_device(device, gpus) == "cuda"


def test_cpu_stays_the_cpu_with_or_without_gpus():
    assert actor_device("cpu", 1) == actor_device("cpu", 0) == "cpu"


def test_actors_without_gpus_keep_auto():
    assert actor_device("auto", 0) == "auto"


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_for_actors_given_no_gpu_is_refused(device):
    with pytest.raises(LabellingError, match=r"ray\.num_gpus_per_actor > 0"):
        actor_device(device, 0)
