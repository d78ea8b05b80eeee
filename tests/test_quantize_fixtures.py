"""The NIR paper's networks (written by Norse, Rockpool, snnTorch, Sinabs) quantize for Loihi 2 within its bit
widths and run in the emulator, or are refused with the precise reason."""

import warnings

import numpy as np
import pytest
from paths import FIXTURES

from spikedeploy.errors import UnsupportedError
from spikedeploy.graph.qparams import CubaParams, SynapseParams
from spikedeploy.io.graph_files import load_any
from spikedeploy.quantize.quantizer import quantize
from spikedeploy.simulate.dispatch import random_inputs, simulate

DT = 1e-4  # the NIR paper's cross-platform LIF test and snnTorch's exporter use 1e-4 s

# the braille CubaLIF biases enter the current exactly on loihi2 (programmable neuron, u_bias); the
# "subtract" file states reset to v_reset in NIR, and its name is not a parameter (test_nir.py)
QUANTIZE = ["lif_norse.nir", "lif_rockpool.nir", "two_lif_neurons.nir", "cnn_sinabs.nir",
            "braille_noDelay_noBias_subtract.nir", "braille_noDelay_bias_zero.nir",
            "braille_noDelay_bias_zero_subgraph.nir"]
# loihi1's fixed CUBA neuron adds biases to v: refused there, naming the node and the target
REFUSE = {
    "braille_noDelay_bias_zero.nir": "bias into the current",
    "braille_noDelay_bias_zero_subgraph.nir": "bias into the current",
}


def _load(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # repair warnings are tested with the reader
        return load_any(FIXTURES / "nir-paper" / name)


@pytest.mark.parametrize("name", QUANTIZE)
def test_fixture_quantizes_within_bit_widths_and_runs(name):
    g = _load(name)
    qg = quantize(g, "loihi2", dt=DT)
    assert not qg.deviations
    for node, q in qg.q.items():
        if isinstance(q, SynapseParams) and g.nodes[node].op in ("Affine", "Linear"):
            w = np.asarray(q.weight)
            assert w.min() >= -256 and w.max() <= 255, node
        if isinstance(q, CubaParams):
            assert 0 <= np.min(q.vth) and np.max(q.vth) < 2**17, node
            assert 0 <= np.min(q.dv) and np.max(q.dv) <= 4096, node
            b = np.asarray(q.bias_mant)
            assert b.min() >= -(2**12) and b.max() < 2**12, node
    g.dt = DT
    run = simulate(qg, random_inputs(g, steps=20, batch=2, density=0.3), backend="emulator")
    assert run.steps == 20 and run.batch == 2


@pytest.mark.parametrize("name,reason", sorted(REFUSE.items()))
def test_fixture_refused_with_reason_naming_the_problem(name, reason):
    g = _load(name)
    with pytest.raises(UnsupportedError, match=f"node '.*'.*{reason}.*'loihi1'.*Fix"):
        quantize(g, "loihi1", dt=DT)
    assert any(isinstance(q, CubaParams) and q.u_bias is not None for q in quantize(g, "loihi2", dt=DT).q.values())


def test_missing_dt_says_how_to_give_it():
    with pytest.raises(UnsupportedError, match="--dt"):
        quantize(_load("lif_norse.nir"), "loihi2")
