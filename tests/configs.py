"""The small configs the tests share, defined once.

Tests that simulate the array keep to these few, so that a Verilator model built for one test
(cached by config under $CELLSP_CACHE) serves the others too.
"""

from cellsp.sim import SPConfig

#: short duty periods and a stimulus threshold of 1, so that duty cycles, boosting and the
#: bumping of weak cells change within a few steps
FAST_DUTY = dict(stimulus_threshold=1, duty_period_log2=2, min_overlap_duty_pct=0.5)

#: 3x3 cells over a 6x6 input, 3x3 pools, the other parameters at their defaults
TINY = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1)

#: TINY with a stimulus threshold of 1 (every overlap counts)
TINY_THRESHOLD_1 = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1,
                            stimulus_threshold=1)

#: TINY with fast duty cycles and boosting on
TINY_BOOSTED = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1,
                        boost_strength=1.0, **FAST_DUTY)

#: TINY with fast duty cycles and boosting off
TINY_BOOST_OFF = SPConfig(input_shape=(6, 6), cell_shape=(3, 3), potential_radius=1,
                          boost_strength=0.0, **FAST_DUTY)

#: 3x5 cells over an 8x10 input, clipped 5x5 pools, one winner per neighbourhood, strong
#: boosting and large bumps
NONSQUARE_CLIP = SPConfig(input_shape=(8, 10), cell_shape=(3, 5), potential_radius=2,
                          edge="clip", winners=1, boost_strength=3.0, perm_bump=30, **FAST_DUTY)

#: 16x16 cells with 29-synapse pools (the default config has 32x32 cells)
SIXTEEN = SPConfig(cell_shape=(16, 16), potential_pct=0.6, winners=2)
#: half of it: 8x16 cells over the same 16x16 input (rows of 16 cells, half the PEs to build)
HALF_SIXTEEN = SPConfig(cell_shape=(8, 16), potential_pct=0.6, winners=2)
