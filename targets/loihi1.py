"""Intel Loihi 1 (14 nm, 2018): the chip nengo-loihi targets.

Per-core limits are nengo-loihi's (`nengo_loihi/block.py`: MAX_COMPARTMENTS, MAX_IN_AXONS, MAX_OUT_AXONS,
MAX_SYNAPSE_BITS), which match Davies et al. 2018 ("1,024 neural units", "4,096 fan-in / fan-out axons",
"2 Mb SRAM per core" of which 128 KB synaptic state). Per-event energies and times are Davies et al. 2018,
Table 2 (pre-silicon SDF+SPICE at 0.75 V, "consistent with early post-silicon measurements"); the
chip-to-chip spike energy is not published and is marked as an estimate.
"""

from spikedeploy.targets.spec import HOST_45NM, CoreLimits, NumericFormat, TargetSpec, Value

D18 = "Davies et al., IEEE Micro 38(1), 2018, Table 2 (Loihi 1, pre-silicon SDF+SPICE, 0.75 V)"
NL = "nengo-loihi e564f66, nengo_loihi/block.py"

SPEC = TargetSpec(
    name="loihi1",
    description="Intel Loihi 1: 1024 compartments, 4096 in/out axons, 1 Mbit synaptic memory per core; 128 cores/chip",
    numeric=NumericFormat(
        weight_bits=8,  # 1-9 bit weights exist (Davies 2018); 8-bit signed mantissa is the common setting
        mixed_sign_drops_lsb=True,  # nengo-loihi: mixed-sign weights keep 8 bits incl. sign (w_max 254)
        state_bits=24,  # u, v: 24-bit signed (Davies 2018; Dey & Dimitrov 2022: +/-2^23)
        vth_bits=17,
        decay_bits=12,
        bias_mant_bits=13,
        max_delay=62,
    ),
    core=CoreLimits(
        neurons=1024,
        synapse_memory_bits=16384 * 64,
        input_axons=4096,
        output_axons=4096,
        sources={
            "neurons": NL + ": MAX_COMPARTMENTS = 1024; Davies 2018: 1,024 neural units per core",
            "synapse_memory_bits": NL + ": MAX_SYNAPSE_BITS = 16384 * 64 (128 KB synaptic state per core)",
            "input_axons": NL + ": MAX_IN_AXONS = 4096; Davies 2018: 4,096 fan-in axons per core",
            "output_axons": NL + ": MAX_OUT_AXONS = 4096; Davies 2018: 4,096 fan-out axons per core",
            "conv_weight_sharing": "nengo-loihi conv uses population axons (pop16/pop32) sharing one kernel",
        },
        estimate=False,
    ),
    cores_per_chip=128,
    max_chips=768,  # Pohoiki Springs (Frady et al. 2020): 768 chips in one system
    energy={
        "synop": Value(23.6e-12, "J", D18 + ": synaptic spike op (min)"),
        "neuron_update": Value(52e-12, "J", D18 + ": neuron update, inactive"),
        "neuron_spike_update": Value(81e-12, "J", D18 + ": neuron update, active (spiking)"),
        "spike_in_core": Value(1.7e-12, "J", D18 + ": within-tile spike energy"),
        "spike_between_cores": Value(3.5e-12, "J", D18 + ": mean of E-W 3.0 / N-S 4.0 pJ per tile hop (one hop)"),
        "spike_between_chips": Value(
            100e-12, "J", "estimate: off-chip link, order of a 1 MB SRAM read (Horowitz ISSCC 2014)", estimate=True
        ),
        "static_power_chip": Value(0.104, "W", "derived from Frady et al. 2020: 3.34 W / 32 chips", estimate=True),
    },
    timing={
        "synop": Value(3.5e-9, "s", D18 + ": synaptic op <= 3.5 ns"),
        "neuron_update": Value(5e-9, "s", "estimate: order of the synop time (not in Table 2)", estimate=True),
        "spike_in_core": Value(2.1e-9, "s", D18 + ": within-tile spike 2.1 ns"),
        "spike_between_cores": Value(5.3e-9, "s", D18 + ": mean of 4.1 / 6.5 ns tile hop"),
        "spike_between_chips": Value(100e-9, "s", "estimate: chip-to-chip link latency", estimate=True),
        "barrier": Value(465e-9, "s", D18 + ": barrier sync 113-465 ns (upper value)"),
    },
    host=dict(HOST_45NM),
    simulators=("emulator",),
)
