"""Intel Loihi 2, as Lava 0.10's bit-accurate model computes it (Loihi2SimCfg, fixed_pt).

Per-core limits of Loihi 2 are not public; the figures below are secondary sources or carried over from
Loihi 1 and are marked as estimates. Loihi 2 publishes no per-operation energy table, so per-event
energies reuse Davies et al. 2018 (Loihi 1, 14 nm) and are marked as estimates.
"""

from spikedeploy.targets.loihi1 import SPEC as LOIHI1
from spikedeploy.targets.spec import HOST_45NM, CoreLimits, NumericFormat, TargetSpec, borrowed

SPEC = TargetSpec(
    name="loihi2",
    description="Intel Loihi 2 (Lava 0.10 fixed-point model): 8-bit weights, 24-bit state, 12-bit decays",
    numeric=NumericFormat(),
    core=CoreLimits(
        neurons=8192,
        synapse_memory_bits=128 * 1024 * 8,
        input_axons=4096,
        output_axons=4096,
        sources={
            "neurons": "Wikichip Loihi 2 page (secondary): up to 8192 neurons per core",
            "synapse_memory_bits": "128 KB per core, 'flexibly partitioned' (secondary, unverified)",
            "input_axons": "Loihi 1 limit carried over (Davies 2018; nengo-loihi MAX_IN_AXONS=4096)",
            "output_axons": "Loihi 1 limit carried over (Davies 2018; nengo-loihi MAX_OUT_AXONS=4096)",
        },
        estimate=True,
    ),
    cores_per_chip=128,
    max_chips=32,
    energy=borrowed(LOIHI1.energy, "Loihi 2 publishes no per-event table; Loihi 1 figure"),
    timing=borrowed(LOIHI1.timing, "Loihi 2 publishes no per-event table; Loihi 1 figure"),
    host=dict(HOST_45NM),
    simulators=("emulator", "lava"),
    # Orchard et al., "Efficient Neuromorphic Signal Processing with Loihi 2", SiPS 2021: "fully programmable
    # neuron models" (microcode); Lava simulates them as custom fixed_pt process models (targets/lava/neurons.py)
    programmable_neurons=True,
)
