"""Intel Loihi 2, as Lava 0.10's bit-accurate model computes it (Loihi2SimCfg, fixed_pt).

Per-core limits of Loihi 2 are not public; the figures below are secondary sources or carried over from
Loihi 1 and are marked as estimates. Loihi 2 publishes no per-operation energy table, so per-event
energies reuse Davies et al. 2018 (Loihi 1, 14 nm) and are marked as estimates.
"""

from .spec import CoreLimits, NumericFormat, TargetSpec, Value

D18 = "Davies et al., IEEE Micro 38(1), 2018, Table 2 (Loihi 1, pre-silicon SDF+SPICE)"

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
    energy={
        "synop": Value(23.6e-12, "J", D18 + ": synaptic spike op (min)", estimate=True),
        "neuron_update": Value(52e-12, "J", D18 + ": neuron update, inactive", estimate=True),
        "neuron_spike_update": Value(81e-12, "J", D18 + ": neuron update, active (spiking)", estimate=True),
        "spike_in_core": Value(1.7e-12, "J", D18 + ": within-tile spike energy", estimate=True),
        "spike_between_cores": Value(3.5e-12, "J", D18 + ": mean of E-W 3.0 / N-S 4.0 pJ tile hop", estimate=True),
        "spike_between_chips": Value(
            100e-12, "J", "estimate: off-chip link, order of an SRAM 1 MB read (Horowitz ISSCC 2014)", estimate=True
        ),
        "static_power_chip": Value(
            0.104, "W", "derived from Frady et al. 2020: 3.34 W / 32 chips (Loihi 1)", estimate=True
        ),
    },
    timing={
        "synop": Value(3.5e-9, "s", D18 + ": synaptic op <= 3.5 ns", estimate=True),
        "neuron_update": Value(5e-9, "s", "estimate: order of the synop time", estimate=True),
        "spike_in_core": Value(2.1e-9, "s", D18 + ": within-tile spike", estimate=True),
        "spike_between_cores": Value(5.3e-9, "s", D18 + ": mean of 4.1 / 6.5 ns tile hop", estimate=True),
        "barrier": Value(465e-9, "s", D18 + ": barrier sync 113-465 ns (upper value)", estimate=True),
    },
    host={
        "mac": Value(4.6e-12, "J", "Horowitz ISSCC 2014, 45 nm fp32 mult 3.7 + add 0.9 pJ"),
        "add": Value(0.9e-12, "J", "Horowitz ISSCC 2014, 45 nm fp32 add"),
        "mac_time": Value(1e-10, "s", "estimate: 10 GMAC/s single host core", estimate=True),
    },
    simulators=("emulator", "lava"),
)
