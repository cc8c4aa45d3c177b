"""``gradkit plan``: a dataset fingerprint -> the recommended ``gradkit train`` command, with reasons.

Rule-based like nnU-Net's (Isensee et al. 2021): each rule reads the fingerprint and makes one
choice. Every threshold below is named once, with the evidence behind it: Ultralytics facts
(strides, the assigner's candidate rule, the letterbox) or measurements of
``benchmarks/thin_defects.py`` (README, "Why thin defects fail"). Rules marked *provisional* have
not yet been confirmed by ``benchmarks/defect_quality.py`` at full scale.

Pure: knows the fingerprint and gradkit's configuration, never Ultralytics.
"""

from __future__ import annotations

import math
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradkit.config import did_you_mean
from gradkit.data.fingerprint import Fingerprint

__all__ = ["Choice", "Plan", "make_plan", "plan_command", "resolve_auto_preset", "transform_list", "write_plan"]

#: Letterbox sizes considered (Ultralytics rounds imgsz up to a multiple of the largest stride, 32).
IMGSZ_STEP = 32
#: The smallest imgsz the plan trains at or suggests: two of the largest stride.
MIN_IMGSZ = 2 * IMGSZ_STEP
#: Ultralytics' default imgsz: the plan does not go below it when the images are at least this large.
DEFAULT_IMGSZ = 640
#: Above this the plan stops growing imgsz and suggests tiling (memory and time grow with its square).
MAX_IMGSZ = 1280
#: How the warning of defects too small for MAX_IMGSZ begins.
TILING_WARNING = "tiling:"
#: Images at least this many times the chosen imgsz get a tiling hint (``gradkit tile``) even when their
#: defects need no larger size: small details are lost in such a downscale (README, "Why thin defects fail").
TILE_FROM = 2.0
#: What the size rules cost where it was measured: the only set whose native size differs from the
#: benchmark's stock size (README, "A third evaluation set"), the plan at 15 minutes of CPU.
IMGSZ_EVIDENCE = ("at equal wall time on the colour set (320 x 256 images, 15 min, two runs sharing 2 CPU cores) "
                  "the plan at that set's native 320 px trained 37 epochs and reached 0.027 mAP50-95, at 256 px "
                  "55 epochs and 0.068 "
                  "(3 seeds; stock at 256: 0.038): with a short budget a smaller imgsz can win; at 200 epochs "
                  "(seed 0) 320 px and 256 px were level (0.119 and 0.127), thin lines unlearnt at both")
#: Optimizer steps a time budget must buy at the size the data calls for, by the plan's estimate, before the
#: plan trains at that size; below it the plan trains smaller (down to deepest_budget_size) to buy more steps.
#: Measured at equal wall time (README, "A short budget buys steps, not pixels"), the larger size lost with
#: 310 real steps at 256 px against 490 at 192 (design set, 7 min), 520 at 320 against 770 at 256 (colour
#: set, 15 min), 550 on tiles of 768 px panels against 670 on the panels shrunk to 256 (12 min) and 588 at
#: 256 against about 950 at 192 (photographs, 12 min); it won with 749-913 at 352 px against 1080-1200 at
#: 288 (material set, 21 min, 4 of 5 seeds) and with 1760 (the panels' tiles at 40 min). So the threshold
#: lies between 588 and 749 real steps. Training took 0.88-1.08 of the estimate's time per image on the two
#: machines where it was checked then (benchmarks/plan_estimate.py), which put that gap at 635-659 estimated
#: steps; with the timer's line through two sizes (session 57) the benchmark's runs made 0.95-1.05 of the steps
#: estimated, which puts it at 619-713. 650 lies inside both. Not fitted further: no measurement lies between. A
#: machine whose speed drifts between timing and training closes that margin (TIMER_DRIFT; the plan then says so).
MIN_STEPS = 650
#: What every epoch of Ultralytics training costs besides its images (saving last.pt and best.pt, starting the
#: loaders and the validator): the intercept of real against priced epoch seconds, 0.50 s (yolo26n) and 0.44 s (its
#: half width) on this project's 2-core CPU (benchmarks/epoch_cost.py, session 50). The budget rule leaves it out
#: (MIN_STEPS was measured without it, on sets where it is a few percent); the estimate names it where it is not.
EPOCH_FIXED_SECONDS = 0.45
#: The share of a priced epoch above which the estimate says what EPOCH_FIXED_SECONDS leaves of the budget.
EPOCH_FIXED_NOTE = 0.15
#: How much the timer's reading of one idle machine moved between two runs ten minutes apart: 1.53x (139
#: against 91 ms per image at 256 px, 262 against 171 at 352; README, "How good the estimate is", and
#: TIMER_DRIFT_EVIDENCE). The plan says when a reading this much faster or slower would change its size.
TIMER_DRIFT = 1.5
#: What that drift was measured on.
TIMER_DRIFT_EVIDENCE = ("the timer of one idle 2-core machine read 1.53x slower in one run of the plan than in "
                        "another ten minutes later; a shared machine's speed drifts over minutes")
#: The budget rule's floor until session 25, as a share of the size the data calls for: the shrinks measured
#: then (0.75 on the design set, 0.8 on the colour set) won. Kept for plan-shrunk@time, the recipe that
#: measured it; the rule now goes down to DEEP_SHRINK.
BUDGET_SHRINK = 0.75
#: The deepest shrink under a short budget, as a share of the smaller of the size the data calls for and the
#: native size (deepest_budget_size): measured at equal wall time against the shrinks that were the floor
#: before (DEEP_SHRINK_EVIDENCE); a 0.5x resize leaves 35% of a 1 px line's contrast (benchmarks/thin_defects.py).
DEEP_SHRINK = 0.5
#: What the budget rule measured (benchmarks/defect_quality.py, plan-shrunk@time and plan-stocksize@time).
BUDGET_EVIDENCE = ("at equal wall time the plan at 0.75x its size beat the plan at its size on the design set "
                   "(7 min: 0.163 +- 0.025 against 0.104 +- 0.027 mAP50-95, 3 seeds, higher on every seed and on "
                   "the thin lines: scratch AP50 0.274 against 0.211) and at 0.8x on the colour set (15 min: 0.068 "
                   "against 0.027, 3 seeds); held out, on the photographs at 12 min, 0.035 +- 0.004 against 0.027 "
                   "+- 0.011 (3 seeds; its faint cracks lower, AP50 0.008 against 0.021); but on the material set "
                   "at 21 min the native 352 px with 749-913 steps beat 288 px (0.127 against 0.112, 5 seeds): "
                   "the larger size lost with 588 real steps or fewer and won with 749 or more")
#: What the deep shrink measured (benchmarks/defect_quality.py plan-deep@time, README "A short budget buys
#: steps, not pixels").
DEEP_SHRINK_EVIDENCE = ("at equal wall time the plan at 0.5x beat the plan at 0.75x on the design set (4 min: 128 px "
                        "0.132 +- 0.016 against 192 px 0.098 +- 0.012 mAP50-95, 3 seeds, higher on every seed; "
                        "scratch AP50 level, 0.175 against 0.170) and the plan at 0.5x the native size beat stock on "
                        "the fifth set, where 0.75x of the upsampled 704 px had scored 0.001 (17 min: 224 px 0.145 "
                        "against stock's 0.056, 3 seeds, higher on every seed); on 768 px panels at 12 min, "
                        "256 px reached 0.038, the panels at 768 px 0.000 and their 256 px tiles 0.010")
#: Compact defects should span at least one stride-8 cell: a 6x6 box gets 4 candidate anchors at
#: stride 8 and none at 16 (benchmarks/thin_defects.py, table 4).
MIN_OBJECT_PX = 8.0
#: A dataset is "thin" when at least this share of its boxes is thin (fingerprint.thin_mask).
THIN_SHARE = 0.15
#: Strokes this thin (px at the chosen imgsz) cover at most 0.12-0.37 of a stride-8 cell, 0.25-0.65
#: of a stride-4 cell (table 2): the stride-4 head doubles what the first detection level sees, yet in
#: training it did worse on such lines (P2_THIN_EVIDENCE), so the plan names them without suggesting it.
THIN_STROKE_PX = 2.0
#: What the stride-4 head did for thin lines (benchmarks/defect_quality.py, README "Stock vs plan").
P2_THIN_EVIDENCE = ("the stride-4 head did worse on thin lines wherever it was measured: on the design set at equal "
                    "wall time (AP50 scratch 0.134 vs 0.283, crack 0.297 vs 0.544, 3 seeds) and on the photographs "
                    "at equal epochs (100; crack 0.016 vs 0.057, scratch 0.117 vs 0.206, seed 0); only the smallest "
                    "compact defects gained")
#: Share of compact boxes below MIN_OBJECT_PX at the chosen imgsz above which the plan suggests the stride-4 head.
P2_SMALL_SHARE = 0.25
#: Why the plan keeps the standard head even then (benchmarks/defect_quality.py, README "Stock vs plan").
P2_EVIDENCE = ("at equal wall time the stride-4 head lost: it costs 1.56x per epoch, and on the design set the "
               "plan with it reached mAP50-95 0.081 against 0.148 with the standard head (7 min, 3 seeds; its "
               "pits did better, 0.269 vs 0.153 AP50, everything else worse)")
#: Share of defects that stand out from the texture around them (fingerprint.standout_share) below
#: which the plan leaves the ``defect`` transform list (D4 and the photometric transforms) out: faint
#: defects on strong textures. Between the two sets measured (README "Stock vs plan"): 0.98 on the
#: design set, where the list helped a little, and 0.52 on the photographed one, where it cost most of
#: what was learnt; a value between them, not a fitted one. The sets built after it (colour 0.68, material
#: 0.67, weld 0.72, strips 0.97) left the gap 0.72-0.97 untested.
FAINT_STANDOUT = 0.75
#: What that rule measured (benchmarks/defect_quality.py, preset-notransforms).
FAINT_EVIDENCE = ("on the photographed set the preset without its transform list reached 0.043 mAP50-95 against "
                  "0.012 with it and stock's 0.020 (seed 0, both with copy-paste; stains AP50 0.254 vs 0.028 and "
                  "0.096); on the colour set, built after this rule (68% stand out), the preset without it reached "
                  "0.049 +- 0.005 against stock's 0.038 +- 0.006 (3 seeds); on the design set, where 98% stand out, "
                  "leaving it out cost a little (0.049 +- 0.010 vs the preset's 0.063 +- 0.010, 3 seeds)")
FLIP_EVIDENCE = ("on the photographed set (100 epochs, 3 seeds) the plan with them reached mAP50-95 0.067 +- 0.009 "
                 "against 0.063 +- 0.005 without any flip, scratch AP50 0.213 vs 0.203, escape rate 0.46 vs 0.57")
#: Most/least frequent class above which copy-paste prefers rare classes.
IMBALANCE = 2.0
#: Share of gray images (1 channel or 3 equal ones) above which hue/saturation jitter is turned off.
GRAY_SHARE = 0.9
#: Epochs without a time budget: Ultralytics' default, the issue's stock baseline.
DEFAULT_EPOCHS = 100
#: Below this many training images an optimizer step per batch (nbs = batch). The threshold is a
#: guess (an epoch of 2000 images at nbs 64 is 31 optimizer steps); the effect was measured below it.
SMALL_DATASET = 2000
#: What that rule measured (benchmarks/defect_quality.py, stock-nbs@epochs; README "Stock vs plan").
NBS_EVIDENCE = ("on the design set (210 images, 30 epochs, 3 seeds) stock Ultralytics with only this change "
                "reached mAP50-95 0.162 +- 0.007 against 0.061 +- 0.027: 4x the optimizer steps")
#: Why the plan keeps Ultralytics' classification loss gain (0.5) rather than twice it
#: (benchmarks/defect_quality.py, plan-cls2@epochs against plan@epochs; README "Stock vs plan").
CLS_EVIDENCE = ("twice it (1.0) was tried for thin data: on the design set (30 epochs, 5 seeds) crack AP50 rose on "
                "every seed (0.728 +- 0.057 against 0.625 +- 0.069), on the photographs (100 epochs, seed 0) the "
                "scratches rose (0.262 against 0.206) and the stains fell (0.222 against 0.280), and on the colour "
                "set, measured after it was chosen (60 epochs, seed 0), mAP50-95 halved (0.029 against 0.065: no "
                "thin class was learnt either way and the stains fell, 0.317 against 0.468)")
#: Why the plan leaves Ultralytics' assigner candidates alone rather than setting ``assign.defect_cells``
#: (benchmarks/defect_quality.py, plan-defectcells@epochs against plan@epochs, side by side on one machine;
#: README "Stock vs plan").
ASSIGN_EVIDENCE = ("keeping only the candidate cells that hold standing-out pixels (assign.defect_cells) was tried "
                   "for thin defects: on the photographs (100 epochs, seed 0) crack AP50 0.117 against 0.114, "
                   "scratches 0.231 against 0.268, stains 0.257 against 0.305; on the colour set (60 epochs, seed 0) "
                   "no thin class was learnt either way (0.043 against 0.035 mAP50-95, stains level)")
#: Why the plan keeps the assigner's CIoU rather than setting ``assign.nwd`` (benchmarks/defect_quality.py,
#: plan-nwd@epochs and plan-nwdwide@epochs against plan@epochs, side by side; README "Scoring tiny and thin boxes").
NWD_EVIDENCE = ("scoring by the larger of CIoU and the Wasserstein similarity (assign.nwd) was tried on the "
                "photographs (100 epochs, seeds 0 and 1): at 8 px scratch AP50 0.230 against 0.139, mAP50-95 0.068 "
                "against 0.062, cracks level (0.079 against 0.075); at 32 px cracks halved (0.038); pits 0 at both, "
                "though taught a target of 0.5 at 32 px; more defective parts shipped at the best-F1 operating "
                "point at both (escape rate 0.58 and 0.53 against 0.47); on the strip set (stock's time, seeds 0 "
                "and 1) mAP50-95 0.152 against 0.137, higher on both, cracks and pits up, scratches 0 in both")
#: Why the plan keeps Ultralytics' box and dfl gains (benchmarks/defect_quality.py, plan-deep-box2@time and
#: plan-deep-l1x2@time against plan-deep@time; README "Is it the loss gains?").
BOX_DFL_EVIDENCE = ("twice the box (CIoU) or the dfl (L1) gain on the strip set (stock's time, seed 0): mAP50-95 "
                    "0.105 and 0.139 against 0.146, scratches 0 in all three, their boxes no thinner")
#: Why the plan weighs every object's box the same (benchmarks/defect_quality.py, plan-deep-perobject@time and
#: plan-perobject@time against plan-deep@time and plan@time, plan-budget@time against plan-budget-noperobject@time;
#: README "Is it the weights the assigner gives them?" and "Stock vs plan").
BOX_WEIGHT_EVIDENCE = ("at stock's wall time, against the plan without it, mAP50-95 higher on every seed of four of the"
                       " five sets trained both ways, at the plan's own size: the strip set 0.167 +- 0.018 against "
                       "0.142 +- 0.013 (3 seeds), the design set 0.183 +- 0.016 against 0.150 +- 0.015 (3 seeds; pits "
                       "0.451 against 0.099) and at the budget's 160-192 px 0.243 against 0.219 (3 seeds), the "
                       "material set 0.124 against 0.100 (2 seeds), the colour set at its native 320 px 0.045 against "
                       "0.025 (3 seeds; stains only); level or a little below, inside the seed spread, on the "
                       "photographs 0.068 against 0.067 (3 seeds; cracks 0.072 against 0.037, stains 0.294 against "
                       "0.337) and on the colour set at the budget's 256 px 0.055 against 0.057 (3 seeds, not side by "
                       "side); the thin scratches gained on none")
#: Why the plan keeps a CPU run in Ultralytics' NCHW (benchmarks/memory_format.py; benchmarks/defect_quality.py,
#: plan-budget-fastest@time against plan-budget@time; README "Channels-last on the CPU").
MEMORY_FORMAT_EVIDENCE = ("channels-last (speed.memory_format: fastest) made a yolo26n training step 1.23-1.29x "
                          "faster on this project's 2-core CPU, but at stock's wall time against NCHW (one seed each) "
                          "it scored the same on the photographs (0.071, 1.19x the epochs), and where the budget then "
                          "shrank less (288 instead of 256 px) 0.149 against 0.117 on the strips and 0.044 against "
                          "0.054 on the colour set; its batch norm rounds further from float64, and a timed choice "
                          "can differ between two runs of one seed: left off, worth trying on a budget")
#: Why the half width starts from gradkit's defect prior (init.prior: defect; benchmarks/defect_quality.py,
#: plan-budget-prior@time against plan-budget@time; README, "Or a network that has already learnt defects?").
PRIOR_EVIDENCE = ("at stock's wall time, the plan from the prior (yolo26n-half trained 25 min on gradkit synth's "
                  "renderer, not counted in the budget) against the same plan from scratch: higher in 18 of 18 pairs "
                  "on six sets, 1.60-3.46x mAP50-95 (colour set 0.236, 0.242 and 0.235 against 0.072, 0.070 and "
                  "0.074, its cracks 0.711-0.723 and scratches 0.204-0.261 from 0.000-0.001; photographs 0.153, 0.136 "
                  "and 0.143 against 0.078, 0.082 and 0.077, cracks 0.178, 0.159 and 0.224 against 0.066, 0.069 and "
                  "0.175; material 0.271, 0.257 and 0.261 against 0.142, 0.157 and 0.144, scratches 0.185, 0.163 and "
                  "0.188 against 0.034, 0.068 and 0.117; strips 0.234, 0.226 and 0.241 against 0.139, 0.129 and "
                  "0.113, scratches 0.001-0.002 either way; weld set 0.343, 0.328 and 0.314 against 0.214, 0.179 "
                  "and 0.169; design set, the "
                  "prior's own renderer, 0.468, 0.430 and 0.409 against 0.264, 0.267 and 0.226); the evaluation sets' "
                  "defects are drawn by other renderers; false-reject rates rose on five pairs (at most 0.21)")
#: The data's input channels the prior's first layer can take: its own three, or one (a data YAML's ``channels: 1``),
#: where it takes their sum over the three (gradkit.integrations.ultralytics.prior.fit_input_channels).
PRIOR_CHANNELS, GRAY_CHANNELS = 3, 1
PRIOR_INPUT_CHANNELS = (GRAY_CHANNELS, PRIOR_CHANNELS)
#: What the prior was measured to do on one-channel data (README, "The prior on one-channel data").
PRIOR_GRAY_EVIDENCE = ("on two gray sets read as channels: 1, at stock's wall time, scored on 1000 images no run "
                       "trained on: the weld set 0.342 mAP50-95 from the prior against 0.158 from scratch (seed 0), "
                       "the strips 0.297 and 0.294 against 0.143 and 0.085 (seeds 0 and 1); from the prior on three "
                       "channels the weld set read 0.352 and the strips 0.267 and 0.261 (sessions 56 and 59, not "
                       "side by side)")
#: From the prior, where the budget rule keeps the size the data calls for and that is the images' native size, the
#: plan trains at this many times it (rounded up to IMGSZ_STEP) if the budget still buys MIN_STEPS there (since
#: session 57: the budget rule's own floor, which it would apply to that size; the colour set's losses did not
#: depend on the steps, PRIOR_UPSCALE_EVIDENCE): a start that has already learnt defects spends stock's seconds
#: better on pixels there.
PRIOR_UPSCALE = 1.25
PRIOR_UPSCALE_EVIDENCE = (
    "from the prior at stock's wall time, 1.25x the size the data calls for against the plan's size (one core "
    "each): the material set at 448 px against 352, 320 and 352 px 1.01x, 1.08x and 1.05x mAP50-95, its scratches "
    "AP50 0.185, 0.163 and 0.188 -> 0.213, 0.226 and 0.193; the photographs at 320 against 256 px 1.17x, 1.06x "
    "and 1.07x, their cracks 0.178, 0.159 and 0.224 -> 0.226, 0.173 and 0.150; larger steps lost: the photographs "
    "at 1.5x (384 px) 0.81x, the colour set at 416 px where the budget rule trains at 256 px 0.98x and 0.93x "
    "(README, \"And more pixels, now that the start is learnt?\"); on 1000 images no run trained on, 1.25x the "
    "native size against it where the half width's steps keep it: the material set 0.260 and 0.271 against 0.240 "
    "and 0.233 (scratches 0.107 against 0.075; about 870 optimizer steps at 448 px), the colour set level to lower "
    "in 5 pairs on two machines whatever the steps (416 against 320 px: -0.003 and -0.019 with about 610 steps, "
    "-0.002 and -0.009 with 670-690, -0.009 with 920; its stains lower in every pair)")
#: Why the budget rule counts the steps of the model the plan trains from the prior (MODEL_HALF, about twice
#: yolo26n's images per second) rather than yolo26n's, which its pairs were measured with from scratch
#: (benchmarks/defect_quality.py, plan-budget-prior-halfsteps@time against plan-budget-prior@time, same seeds and
#: seconds, one core each; README, "The budget rule counts the steps of the model it trains").
HALF_STEPS_EVIDENCE = (
    "from the prior at stock's wall time, sized by the half width's own steps against yolo26n's, scored on 1000 "
    "images no run trained on, higher on every set where the sizes differ: the colour set at its native 320 px "
    "against 224 px 0.193 and 0.195 against 0.168 and 0.168 mAP50-95 (scratches AP50 0.240 and 0.249 against 0.191 "
    "and 0.198), the material set at 352 against 288-320 px 0.243 and 0.243 against 0.209 and 0.227, the strips at "
    "352 against 224 px 0.256 against 0.216, the weld set at 512 against 352 px 0.352 against 0.339; the "
    "photographs level (0.116 and 0.121 against 0.119 and 0.115)")
#: Ultralytics' nominal batch size: gradients are accumulated to this many images per optimizer step.
ULTRALYTICS_NBS = 64
#: (model yaml, imgsz, number of classes) -> seconds one training image costs on the machine that will train
#: (None: not measurable there).
SecondsPerImage = Callable[[str, int, int], "float | None"]
MODEL = "yolo26n.yaml"
MODEL_P2 = "yolo26n-p2.yaml"
#: yolo26n at half its channel width (width multiple 0.125, depth and layers kept; 0.68 M parameters against
#: 2.5 M): a name gradkit train writes the YAML of (gradkit.integrations.ultralytics.models.VARIANTS).
MODEL_HALF = "yolo26n-half.yaml"
#: The least speed-up over yolo26n (its images per second, by the machine's timer) for which the plan trains
#: MODEL_HALF. Every pair in HALF_WIDTH_EVIDENCE was trained where it bought 1.8-2.1x the epochs (one thread each);
#: the timer read 1.6-1.95x on one thread (sessions 44 and 45; 1.95x timed in turn) and 1.62x on two, when it timed
#: at 128 px only and scaled both models alike. Since session 57 it reads both models' steps at the size weighed,
#: off their lines through two sizes: 1.9-2.2x at 256-448 px in one timing, 2.5-2.6x at 256-352 px in another, where
#: training reached 1.74-2.31x yolo26n's images per second (benchmarks/timer_scaling.py, benchmarks/plan_estimate.py;
#: README "The timer reads two sizes"; 1.5-1.6x at 128 px). 1.5-1.8x is an extrapolation, taken so that a
#: two-thread machine like the demo's trains it; below 1.5 nothing backs it, and a GPU, where a model this small
#: does not fill the device, is not timed at all.
HALF_WIDTH_MIN_SPEEDUP = 1.5
#: The most optimizer steps a budget may buy yolo26n for the plan to trade its width for steps: the most it took in
#: any pair of HALF_WIDTH_EVIDENCE (the photographs, seed 2 of session 41: 109 epochs of 14 steps). A longer budget
#: already buys yolo26n more steps than any pair had, where the trade of capacity for steps was not measured.
HALF_WIDTH_MAX_STEPS = 1526
#: Why a time budget trains MODEL_HALF (benchmarks/defect_quality.py, plan-budget-narrow@time against
#: plan-budget-yolo26n@time, one core each: README, "Or a thinner network that sees more images?"). It trains
#: about twice the epochs in the same time, at the size the budget rule chose for yolo26n (the plan chooses the
#: width at that size, as the pairs were measured; from the prior it then sizes by the half width's own steps,
#: HALF_STEPS_EVIDENCE).
HALF_WIDTH_EVIDENCE = ("at equal wall time (stock's) half of yolo26n's width trained about twice the epochs and "
                       "scored higher than yolo26n in 9 of 11 pairs on six sets (mAP50-95, half against full "
                       "width): photographs 0.078 vs 0.054 side by side, 0.089 and 0.077 vs 0.070 and 0.071 "
                       "trained in other sessions; colour 0.094 vs 0.050 and 0.085 vs 0.041; strips 0.139 vs 0.130 "
                       "and 0.129 vs 0.119; weld 0.214 vs 0.157; material 0.157 vs 0.140 but 0.142 vs 0.159; design "
                       "set 0.264 vs 0.284 (7 min); no fingerprint measure told the two lower pairs from the rest; "
                       "with epochs fixed it was not measured")


@dataclass
class Choice:
    """One decision: the setting, its value, why, and whether the evidence is still provisional."""

    key: str
    value: Any
    reason: str
    provisional: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "reason": self.reason, "provisional": self.provisional}


@dataclass
class Plan:
    """The recommended run: Ultralytics train arguments, the gradkit configuration, the reasons."""

    data: str
    train: dict[str, Any] = field(default_factory=dict)
    gradkit: dict[str, Any] = field(default_factory=dict)
    choices: list[Choice] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def choose(self, key: str, value: Any, reason: str, provisional: bool = False) -> Any:
        self.choices.append(Choice(key, value, reason, provisional))
        return value

    def command(self, gradkit_cfg: str = "plan.gradkit.yaml") -> str:
        """The command to paste into a shell: each key=value quoted where a path holds spaces or the like."""
        pairs = [("data", self.data), *self.train.items(), ("gradkit", gradkit_cfg)]
        return "gradkit train " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in pairs)

    def as_dict(self, gradkit_cfg: str = "plan.gradkit.yaml") -> dict[str, Any]:
        return {"command": self.command(gradkit_cfg), "train": self.train, "gradkit": self.gradkit,
                "choices": [c.as_dict() for c in self.choices], "warnings": self.warnings}


def _round_up(x: float) -> int:
    return int(math.ceil(x / IMGSZ_STEP) * IMGSZ_STEP)


def native_imgsz(fp: Fingerprint, fallback: int) -> int:
    """The median image's long side rounded up to a size Ultralytics trains at (``fallback`` when none was
    measured): a few larger images do not upsample the rest (the tiling hint counts those TILE_FROM times the
    trained size or more)."""
    return _round_up(fp.typical_side) if fp.typical_side else fallback


def _native_side(fp: Fingerprint) -> str:
    """The native long side as the reasons name it, with the spread where the images' sizes vary."""
    if fp.max_side == fp.typical_side:
        return f"{fp.typical_side} px"
    return (f"{fp.typical_side} px, the median image's: long sides vary from {min(fp.long_sides)} to {fp.max_side} "
            "px")


def choose_imgsz(fp: Fingerprint, plan: Plan) -> int:
    native = native_imgsz(fp, DEFAULT_IMGSZ)
    compact = ~fp.thin_mask()
    wanted = min(native, DEFAULT_IMGSZ)
    reason = f"the native size ({_native_side(fp)}), Ultralytics' default {DEFAULT_IMGSZ} at most"
    if fp.thin_share >= THIN_SHARE:
        wanted = native
        reason = (f"{fp.thin_share:.0%} of the boxes are thin lines: never downscale them (a 0.75x resize leaves "
                  f"41% of a 1 px line's contrast, 0.5x 35%); native long side {_native_side(fp)}")
    if compact.any():
        w, h = fp.box_pixels(native)
        short = np.minimum(w, h)[compact]
        short = short[np.isfinite(short)]
        if short.size:
            # pixels scale linearly with imgsz: the size at which the median compact box reaches MIN_OBJECT_PX
            need = _round_up(native * MIN_OBJECT_PX / max(float(np.median(short)), 1e-6))
            if need > wanted:
                wanted, reason = need, (f"the median compact defect ({np.median(short):.1f} px at {native}) must "
                                        f"span one stride-8 cell ({MIN_OBJECT_PX:g} px)")
    if wanted > MAX_IMGSZ:
        tiles = (f"; cut the images into tiles of {MAX_IMGSZ} px, overlapping by the longest defect, and train on "
                 f"the tiles: {_tile_command(fp, MAX_IMGSZ)}" if fp.max_side > MAX_IMGSZ else
                 "; the images are no larger than that, so tiles cannot help: only a finer model (or larger "
                 "images) can")
        plan.warnings.append(f"{TILING_WARNING} defects need imgsz {wanted} > {MAX_IMGSZ}{tiles}")
        wanted, reason = MAX_IMGSZ, reason + f"; capped at {MAX_IMGSZ} (see the tiling warning)"
    return plan.choose("imgsz", max(wanted, MIN_IMGSZ), f"{reason}; {IMGSZ_EVIDENCE}", provisional=True)


def hint_tiling(fp: Fingerprint, imgsz: int, plan: Plan) -> None:
    """Images at least TILE_FROM times the trained size lose small details in the downscale: name the tiles
    (unless the defects' own size already did)."""
    large = [side for side in fp.long_sides if side >= TILE_FROM * imgsz]
    if not large or any(w.startswith(TILING_WARNING) for w in plan.warnings):
        return
    which = (f"images ({max(large)} px) are {max(large) / imgsz:.1f}x" if len(large) == len(fp.long_sides) else
             f"{len(large)} of the {len(fp.long_sides)} images measured (long side up to {max(large)} px) are "
             f"{TILE_FROM:g}x or more")
    plan.warnings.append(f"{which} the chosen imgsz: small details are lost in the downscale; tiling keeps them: "
                         f"{_tile_command(fp, imgsz)}")


def _tile_command(fp: Fingerprint, size: int) -> str:
    """The command that writes a tiled copy at ``size`` px, and what to do with it."""
    return f"gradkit tile data={shlex.quote(fp.data)} size={size}, then gradkit plan data=<the tiled copy's data.yaml>"


def _thin_case(fp: Fingerprint, imgsz: int) -> str | None:
    """Thin strokes at ``imgsz``, described, or None."""
    thin = fp.thin_mask()
    stroke = fp.stroke_pixels(imgsz)[thin] if thin.any() else np.array([])
    stroke = stroke[np.isfinite(stroke)]
    if fp.thin_share >= THIN_SHARE and stroke.size and np.median(stroke) <= THIN_STROKE_PX:
        return (f"{fp.thin_share:.0%} of the boxes are thin, median stroke {np.median(stroke):.1f} px at imgsz "
                f"{imgsz} (a 1-2 px line covers at most 0.12-0.37 of a stride-8 cell, 0.25-0.65 of a stride-4 one)")
    return None


def _small_case(fp: Fingerprint, imgsz: int) -> str | None:
    """Compact defects too small for the standard head's assigner at ``imgsz``, described, or None."""
    w, h = fp.box_pixels(imgsz)
    short = np.minimum(w, h)[~fp.thin_mask()]
    short = short[np.isfinite(short)]
    small = float((short < MIN_OBJECT_PX).mean()) if short.size else 0.0
    if small >= P2_SMALL_SHARE:
        return (f"{small:.0%} of the compact defects are below {MIN_OBJECT_PX:g} px at imgsz {imgsz} (Ultralytics' "
                "assigner floors box sides to the second stride: 16 px with yolo26n, 8 with the p2 head)")
    return None


def choose_model(fp: Fingerprint, imgsz: int, plan: Plan, budget_min: float | None = None,
                 seconds_per_image: SecondsPerImage | None = None, width_imgsz: int | None = None) -> str:
    """The model's head at ``imgsz`` (MODEL; the stride-4 head only suggested), then, with a budget, its width
    (:func:`choose_width` at ``width_imgsz``, default ``imgsz``; ``seconds_per_image`` with each image's share of
    the validation)."""
    _choose_head(fp, imgsz, plan)
    choice = next(c for c in plan.choices if c.key == "model")
    if budget_min:
        choose_width(choice, fp, budget_min, width_imgsz or imgsz, plan.train.get("nbs", ULTRALYTICS_NBS),
                     seconds_per_image)
    return choice.value


def trades_width_for_steps(fp: Fingerprint, budget_min: float, imgsz: int, nbs: int,
                           seconds_per_image: SecondsPerImage | None) -> bool:
    """Whether :func:`choose_width` trains MODEL_HALF at ``imgsz``."""
    return _width_reading(fp, budget_min, imgsz, nbs, seconds_per_image)[2] is None


def _width_reading(fp: Fingerprint, budget_min: float, imgsz: int, nbs: int,
                   seconds_per_image: SecondsPerImage | None) -> tuple[float | None, float | None, str | None]:
    """The timer's speed-up of MODEL_HALF over MODEL at ``imgsz``, the steps the budget buys MODEL there, and why
    the plan keeps MODEL's width (None: it trains MODEL_HALF)."""
    nc = len(fp.class_names)
    full = None if seconds_per_image is None else seconds_per_image(MODEL, imgsz, nc)
    half = None if full is None else seconds_per_image(MODEL_HALF, imgsz, nc)
    speedup = full / half if full and half else None
    steps = budget_buys(fp.images, budget_min, nbs, full)[1] if full else None
    return speedup, steps, _why_full_width(speedup, steps)


def choose_width(choice: Choice, fp: Fingerprint, budget_min: float, imgsz: int, nbs: int,
                 seconds_per_image: SecondsPerImage | None) -> None:
    """yolo26n at half its width where this machine's timer says it trains at least HALF_WIDTH_MIN_SPEEDUP times the
    images per second and the budget buys yolo26n no more than HALF_WIDTH_MAX_STEPS (HALF_WIDTH_EVIDENCE);
    ``choice``, the head's, gets the reason either way."""
    speedup, steps, why_not = _width_reading(fp, budget_min, imgsz, nbs, seconds_per_image)
    if why_not is not None:
        choice.reason += (f"; yolo26n at half its width ({MODEL_HALF}) is the plan's model for a budget where it "
                          f"trains at least {HALF_WIDTH_MIN_SPEEDUP:g}x the images per second and yolo26n would "
                          f"take at most {HALF_WIDTH_MAX_STEPS} optimizer steps, here {why_not}")
        return
    choice.value, choice.provisional = MODEL_HALF, True
    choice.reason = (f"yolo26n at half its channel width: this machine's timer puts it at {speedup:.2f}x yolo26n's "
                     f"images per second (validation included), so the budget of {budget_min:g} min buys it that "
                     f"many times the epochs, where yolo26n would take about {steps:.0f} optimizer steps (chosen at "
                     f"the size yolo26n's steps buy, as the pairs were); {HALF_WIDTH_EVIDENCE}; why yolo26n's head: "
                     f"{choice.reason}")


def _given_model(model: str, plan: Plan) -> str:
    """The user's ``model`` in place of the plan's choice, which the reason keeps (imgsz is sized by yolo26n's
    steps, as the rules were measured, or by the half width's where it is the model given and starts from the
    prior)."""
    choice = next(c for c in plan.choices if c.key == "model")
    choice.reason = f"given (model={model}); the plan's own choice: {choice.value}, {choice.reason}"
    choice.value, choice.provisional = model, False
    return model


def _why_full_width(speedup: float | None, steps: float | None) -> str | None:
    """Why the timer's reading keeps yolo26n's width, or None where it trades width for steps."""
    if speedup is None or steps is None:
        return "not timed on this machine"
    if speedup < HALF_WIDTH_MIN_SPEEDUP:
        return f"this machine's timer puts it at only {speedup:.2f}x yolo26n's images per second"
    if steps > HALF_WIDTH_MAX_STEPS:
        return f"the budget buys yolo26n about {steps:.0f} steps, more than any pair had"
    return None


def _choose_head(fp: Fingerprint, imgsz: int, plan: Plan) -> str:
    small, thin = _small_case(fp, imgsz), _thin_case(fp, imgsz)
    thin_reason = None if thin is None else f"{thin}, but {P2_THIN_EVIDENCE}"
    if small is not None:
        also_thin = "" if thin_reason is None else f"; {thin_reason}"
        plan.warnings.append(f"{small}: the stride-4 head (model={MODEL_P2}) may find them better in long runs; "
                             f"try it against this plan ({P2_EVIDENCE}){also_thin}")
        return plan.choose("model", MODEL, f"{small}, but {P2_EVIDENCE}{also_thin}", provisional=True)
    if thin_reason is not None:
        return plan.choose("model", MODEL, thin_reason, provisional=True)
    return plan.choose("model", MODEL, "defects span the stride-8 cells of the standard head")


def choose_batching(fp: Fingerprint, plan: Plan) -> None:
    if fp.images < SMALL_DATASET:
        plan.train["batch"] = 16
        plan.train["nbs"] = plan.choose("nbs", 16, (
            f"{fp.images} training images: an optimizer step per batch of 16 instead of per {ULTRALYTICS_NBS} "
            f"images; {NBS_EVIDENCE}"), provisional=True)


def choose_schedule(fp: Fingerprint, budget_min: float | None, plan: Plan,
                    seconds_per_image: SecondsPerImage | None = None,
                    val_seconds_per_image: SecondsPerImage | None = None) -> None:
    if budget_min:
        hours = round(budget_min / 60, 4)
        estimate = ("" if seconds_per_image is None else
                    "; " + _budget_estimate(fp, budget_min, plan, seconds_per_image, val_seconds_per_image))
        plan.train["time"] = plan.choose("time", hours, f"a budget of {budget_min:g} min: Ultralytics' time= (hours) "
                                         f"stops training on the wall clock and adapts the schedule to it{estimate}")
    else:
        plan.train["epochs"] = plan.choose("epochs", DEFAULT_EPOCHS, "no budget given: Ultralytics' default; "
                                           "give budget=MIN to fit a wall-clock budget", provisional=True)


def budget_buys(images: int, budget_min: float, nbs: int, seconds: float) -> tuple[float, float]:
    """(epochs of ``images`` training images, optimizer steps of ``nbs`` images) that ``budget_min`` minutes of
    training buy at ``seconds`` per training image (its share of the validation included). An epoch's last,
    partial batch is a step too, as Ultralytics counts them (the README's real step counts are these)."""
    epochs = budget_min * 60 / seconds / max(images, 1)
    return epochs, epochs * math.ceil(max(images, 1) / nbs)


def with_validation(fp: Fingerprint, train: SecondsPerImage,
                    validate: SecondsPerImage | None) -> SecondsPerImage:
    """Seconds per training image with its share of the validation Ultralytics runs after every epoch
    (``fp.val_images`` validated per ``fp.images`` trained); ``train`` alone without a validation timer."""
    if validate is None or not fp.val_images:
        return train

    def per_image(model: str, imgsz: int, nc: int) -> float | None:
        trained, validated = train(model, imgsz, nc), validate(model, imgsz, nc)
        if trained is None or validated is None:
            return trained
        return trained + validated * fp.val_images / max(fp.images, 1)
    return per_image


def _budget_estimate(fp: Fingerprint, budget_min: float, plan: Plan, seconds_per_image: SecondsPerImage,
                     val_seconds_per_image: SecondsPerImage | None) -> str:
    imgsz, model, nc = plan.train["imgsz"], plan.train["model"], len(fp.class_names)
    trained = seconds_per_image(model, imgsz, nc)
    if trained is None:
        if not str(model).lower().endswith((".yaml", ".yml")):
            return f"not estimated: the timer builds a model from a yaml, and {model} is not one"
        return "not estimated on this machine: its CUDA GPU would train, and only the CPU is timed"
    seconds = with_validation(fp, seconds_per_image, val_seconds_per_image)(model, imgsz, nc)
    epochs, steps = budget_buys(fp.images, budget_min, plan.train.get("nbs", ULTRALYTICS_NBS), seconds)
    if seconds > trained:
        cost = (f"{seconds * 1000:.0f} ms per training image at imgsz {imgsz}, {(seconds - trained) * 1000:.0f} ms of "
                f"them its share of validating the {fp.val_images} val images after every epoch, which time= "
                "counts too (val=False validates the last epoch only); an estimate from timed steps of the model")
    else:
        cost = (f"{seconds * 1000:.0f} ms per image at imgsz {imgsz}, an estimate from timed steps of the model: "
                "validation, which time= counts too, is not in it")
    return (f"on this machine that is about {epochs:.0f} epochs of the {fp.images} training images "
            f"({steps:.0f} optimizer steps; {cost}){_fixed_cost_note(fp.images * seconds, budget_min)}")


def _fixed_cost_note(epoch_seconds: float, budget_min: float) -> str:
    """What the budget buys once EPOCH_FIXED_SECONDS is paid too, where that is a large share of an epoch."""
    if EPOCH_FIXED_NOTE * epoch_seconds >= EPOCH_FIXED_SECONDS:
        return ""
    epochs = budget_min * 60 / (epoch_seconds + EPOCH_FIXED_SECONDS)
    return (f"; about {epochs:.0f} epochs once what every epoch costs besides its images is paid too (about "
            f"{EPOCH_FIXED_SECONDS:g} s on this project's CPU: checkpoints, starting the loaders and the "
            "validator), which on a set this small the estimate and the size rule leave out")


def smallest_budget_size(wanted: int) -> int:
    """BUDGET_SHRINK of ``wanted``, rounded up to 32: the budget rule's floor until session 25."""
    return max(_round_up(wanted * BUDGET_SHRINK), MIN_IMGSZ)


def deepest_budget_size(fp: Fingerprint, wanted: int) -> int:
    """DEEP_SHRINK of the smaller of ``wanted`` and the native size (rounded up to 32): a size the data called
    for above its native size is upsampling, which adds no detail a short budget can afford to pay for."""
    native = native_imgsz(fp, wanted)
    return max(_round_up(min(wanted, native) * DEEP_SHRINK), MIN_IMGSZ)


def budget_steps(fp: Fingerprint, budget_min: float, nbs: int, seconds_per_image: SecondsPerImage,
                 model: str) -> Callable[[int], float]:
    """Optimizer steps the budget buys ``model`` at a size, by this machine's timer (0 where it is not timed)."""
    def steps(size: int) -> float:
        seconds = seconds_per_image(model, size, len(fp.class_names))
        return 0.0 if seconds is None else budget_buys(fp.images, budget_min, nbs, seconds)[1]
    return steps


def budget_size(fp: Fingerprint, budget_min: float, wanted: int, nbs: int, seconds_per_image: SecondsPerImage,
                model: str = MODEL) -> int:
    """The budget rule's size for ``model`` (:func:`size_buying_steps`), nothing said."""
    steps = budget_steps(fp, budget_min, nbs, seconds_per_image, model)
    return size_buying_steps(steps, wanted, deepest_budget_size(fp, wanted))


def fit_imgsz_to_budget(fp: Fingerprint, budget_min: float, wanted: int, plan: Plan,
                        seconds_per_image: SecondsPerImage, model: str = MODEL) -> int:
    """The size to train at (:func:`size_buying_steps` with this machine's timer, counting ``model``'s steps); a
    smaller one gets its reason and, when still short, a warning; either gets the close-call note where the timer's
    drift would change it."""
    steps = budget_steps(fp, budget_min, plan.train.get("nbs", ULTRALYTICS_NBS), seconds_per_image, model)
    floor = deepest_budget_size(fp, wanted)
    size = size_buying_steps(steps, wanted, floor)
    imgsz = next(c for c in plan.choices if c.key == "imgsz")
    who, counted = _counted(model)
    if size != wanted:
        imgsz.value = size
        imgsz.reason = (f"smaller than the {wanted} the data calls for: a budget of {budget_min:g} min buys {who} "
                        f"about {steps(wanted):.0f} optimizer steps at {wanted} on this machine, {steps(size):.0f} at "
                        f"{size} (the plan trains smaller below {MIN_STEPS} steps: {BUDGET_EVIDENCE}; "
                        f"down to {DEEP_SHRINK:g}x the smaller of that and the native size: "
                        f"{DEEP_SHRINK_EVIDENCE}){counted}; why "
                        f"{wanted}: {imgsz.reason}")
        if steps(size) < MIN_STEPS:
            plan.warnings.append(_short_budget_warning(budget_min, wanted, size, steps, who))
    elif counted and steps(wanted) >= MIN_STEPS:
        imgsz.reason = (f"the {wanted} the data calls for: a budget of {budget_min:g} min buys {who} about "
                        f"{steps(wanted):.0f} optimizer steps there on this machine ({MIN_STEPS} or more: "
                        f"{BUDGET_EVIDENCE}){counted}; why {wanted}: {imgsz.reason}")
    imgsz.reason += _drift_note(steps, wanted, size, floor)
    return size


def _counted(model: str) -> tuple[str, str]:
    """Whose steps the budget rule counts, as its reason names them, and why where it is not yolo26n's."""
    if model == MODEL:
        return "yolo26n", ""
    return (f"{MODEL_HALF}, the model the plan trains from the prior,",
            f"; counted for the model the plan trains from the prior: {HALF_STEPS_EVIDENCE}")


def size_buying_steps(steps: Callable[[int], float], wanted: int, floor: int) -> int:
    """``wanted``, or the largest multiple of 32 down to ``floor`` whose ``steps`` reach MIN_STEPS (else ``floor``);
    ``wanted`` where nothing is timed or a smaller size buys no more steps."""
    at_wanted = steps(wanted)
    if not at_wanted or at_wanted >= MIN_STEPS:
        return wanted
    size = wanted
    while size - IMGSZ_STEP >= floor and steps(size) < MIN_STEPS:
        size -= IMGSZ_STEP
    return wanted if steps(size) <= at_wanted else size  # a cost that does not fall with the size buys nothing


def _drift_note(steps: Callable[[int], float], wanted: int, size: int, floor: int) -> str:
    """What the budget rule would choose had the timer read TIMER_DRIFT faster or slower, where that differs."""
    other = {how: size_buying_steps(lambda s, f=factor: steps(s) * f, wanted, floor)
             for how, factor in (("faster", TIMER_DRIFT), ("slower", 1 / TIMER_DRIFT))}
    return _close_call([f"read {TIMER_DRIFT:g}x {how} it would train at {s}" for how, s in other.items() if s != size])


def _close_call(differ: list[str]) -> str:
    """The close-call note for what a timer TIMER_DRIFT faster or slower would have chosen (``differ``), if anything."""
    if not differ:
        return ""
    return (f"; a close call: {' and '.join(differ)}, and a timer can drift that much between two runs of the "
            f"plan ({TIMER_DRIFT_EVIDENCE})")


def _short_budget_warning(budget_min: float, wanted: int, size: int, steps: Callable[[int], float],
                          who: str = "yolo26n") -> str:
    """What a budget too short even at the smallest size the plan trains at buys, and which size would do."""
    buying = next((s for s in range(size - IMGSZ_STEP, MIN_IMGSZ - 1, -IMGSZ_STEP) if steps(s) >= MIN_STEPS), None)
    smaller = (f"a smaller imgsz= ({buying} buys {MIN_STEPS} or more; deeper shrinks were measured only on 768 px "
               "panels, not on thin lines)" if buying else f"no imgsz down to {MIN_IMGSZ} buys them")
    return (f"a budget of {budget_min:g} min buys {who} about {steps(size):.0f} optimizer steps even at imgsz {size} "
            f"({size / wanted:.2g}x the {wanted} the data calls for, the smallest the plan goes): under "
            f"{MIN_STEPS}, the run will stop while still learning fast; a larger budget= pays, or {smaller}")


def choose_augmentation(fp: Fingerprint, plan: Plan) -> dict[str, Any]:
    augment: dict[str, Any] = {}  # augment.bbox: gradkit's defaults, which keep thin and tiny defects
    _keep_thin_boxes(fp, plan)
    augment["preset"] = _choose_transforms(fp, plan)
    rare = fp.imbalance >= IMBALANCE
    augment["copy_paste"] = {"p": 0.3, "max_per_image": 2, "rare_first": rare}
    plan.choose("augment.copy_paste.rare_first", rare, (
        f"class imbalance {fp.imbalance:.1f}x (most/least frequent) "
        + (f">= {IMBALANCE:g}: paste rare classes more often" if rare else f"< {IMBALANCE:g}: paste as in the data")),
        provisional=True)
    hyp: dict[str, Any] = {"flipud": 0.0, "degrees": 4.0}
    if augment["preset"] == "none":
        plan.choose("augment.ultralytics.fliplr", "stock", "no transform list, so nothing else flips: keep "
                    f"Ultralytics' own left-right flips; {FLIP_EVIDENCE}", provisional=True)
    else:
        hyp["fliplr"] = 0.0
        plan.choose("augment.ultralytics.fliplr", 0.0, "the transform list's D4 already draws all 8 flips and "
                    "rotations of the square")
    if fp.gray_share >= GRAY_SHARE:
        hyp.update(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
        value = ("the preset's brightness/contrast replaces hsv_v" if augment["preset"] != "none" else
                 "value jitter off too, as in the faint-defect rule's measurement (no brightness change at all)")
        plan.choose("augment.ultralytics.hsv", "off", f"{fp.gray_share:.0%} of the images are gray: hue and "
                    f"saturation jitter only tint them; {value}")
    else:
        plan.choose("augment.ultralytics.hsv", "stock", f"colour images ({1 - fp.gray_share:.0%}): keep "
                    "Ultralytics' colour jitter")
    augment["ultralytics"] = hyp
    return augment


def transform_list(fp: Fingerprint) -> tuple[str, str]:
    """The transform list for this data, with the reason: ``defect`` unless the defects are mostly as faint
    as their texture (``none``). The plan's rule, and ``augment.preset: auto``'s."""
    from gradkit.augment.pipeline import SENSOR_LEFT_OUT  # the plan takes ``defect``, never ``defect-sensor``

    standout = fp.standout_share
    if math.isfinite(standout) and standout < FAINT_STANDOUT:
        return "none", (f"only {standout:.1%} of the defects stand out from the texture around them "
                        f"(< {FAINT_STANDOUT:.0%}): no D4 or photometric transforms; {FAINT_EVIDENCE}")
    measured = f"{standout:.0%} of the defects stand out from their texture; " if math.isfinite(standout) else ""
    return "defect", f"D4 flips, illumination, noise ({fp.thin_share:.0%} thin boxes; {measured}{SENSOR_LEFT_OUT})"


def resolve_auto_preset(aug: Any, fp: Fingerprint) -> tuple[Any, str | None]:
    """``aug`` (an ``augment`` section) with ``preset: auto`` replaced by :func:`transform_list`'s choice
    for ``fp``, and the reason; any other preset is returned as it is, with None."""
    if aug.preset != "auto":
        return aug, None
    name, reason = transform_list(fp)
    return aug.model_copy(update={"preset": name}), reason


def _keep_thin_boxes(fp: Fingerprint, plan: Plan) -> None:
    """Say how many labels gradkit's augmentation keeps that Ultralytics' own warp would drop."""
    from gradkit.augment.affine_boxes import REPORTED_DROP_RATE, ULTRALYTICS_ZOOM, drop_rate, zoom_range
    from gradkit.config import BboxFilterConfig

    imgsz = plan.train["imgsz"]
    w, h = fp.box_pixels(imgsz)
    known = np.isfinite(w) & np.isfinite(h)
    rate = drop_rate(np.stack([w[known], h[known]], 1), zoom_range(ULTRALYTICS_ZOOM))
    named = rate >= REPORTED_DROP_RATE
    names = np.asarray([fp.class_names.get(c, str(c)) for c in fp.box_cls], dtype=object)[known][named]
    per_class = ", ".join(f"{n} {k}" for n, k in sorted(Counter(names.tolist()).items()))
    kept = f"gradkit drops a box there only when less than {BboxFilterConfig().min_visibility:g} of it is in view"
    reason = (f"Ultralytics' own warp (no rotation) would drop {int(named.sum())} of {int(known.sum())} boxes at "
              f"imgsz {imgsz} ({per_class}) in {rate[named].mean():.0%} of their samples on average, while the "
              f"defect stays in the image; {kept}" if named.any() else
              f"no box is thin or small enough for Ultralytics' own warp to drop it in {REPORTED_DROP_RATE:.0%} "
              f"of its samples; {kept}")
    plan.choose("augment.bbox", "keep thin boxes through the warp", reason)


def _choose_transforms(fp: Fingerprint, plan: Plan) -> str:
    name, reason = transform_list(fp)
    return plan.choose("augment.preset", name, reason, provisional=True)


def _warn_data(fp: Fingerprint, plan: Plan) -> None:
    if fp.label_errors:
        plan.warnings.append(f"{fp.label_errors} label line(s) have errors and were left out of these measures, "
                             "and the check before training will stop the command below: gradkit check "
                             f"data={shlex.quote(fp.data)} --fix writes a clean copy to plan and train on")
    if fp.unread_images:
        plan.warnings.append(f"{fp.unread_images} image(s) of the split were not measured (listed but missing, or "
                             "in a format gradkit does not read): run gradkit check")
    if fp.bit_depth.get(16):
        plan.warnings.append(f"{fp.bit_depth[16]} 16-bit image(s): Ultralytics divides by 256; run gradkit check")
    if fp.defect_free_share < 0.05:
        plan.warnings.append(f"only {fp.defect_free_share:.0%} defect-free images: false rejects on good parts "
                             "cannot be learned; add good parts (empty label files)")
    if fp.val_absent:
        plan.warnings.append(f"val: {', '.join(fp.val_absent)} does not exist: Ultralytics will not train; "
                             "run gradkit check")
    if fp.val_named is False:
        plan.warnings.append(f"{fp.data} has no val: key: Ultralytics validates after every epoch and will not train "
                             "without it; add val: with images of their own")
    if fp.val_is_train:
        plan.warnings.append(f"the val split of {fp.data} reads the {fp.split} split's images: its scores would "
                             "measure memorisation; give val images of their own")
    missing = [n for n, k in fp.class_counts.items() if k == 0]
    if missing:
        plan.warnings.append(f"classes without a training instance: {', '.join(missing)}")


def _no_defects(fp: Fingerprint) -> str:
    """Why a split without one labelled box cannot be planned for (nor trained on)."""
    errors = f", {fp.label_errors} label line(s) with errors left out" if fp.label_errors else ""
    unread = (f"; {fp.unread_images} more in formats gradkit does not read or missing, not measured"
              if fp.unread_images else "")
    return (f"{fp.data}: the {fp.split} split holds no labelled defect ({fp.images} images, no usable label "
            f"line{errors}{unread}): a detector learns its classes from labelled examples, and the plan measures "
            "them; run gradkit check, label some")


def make_plan(fp: Fingerprint, budget_min: float | None = None, seconds_per_image: SecondsPerImage | None = None,
              val_seconds_per_image: SecondsPerImage | None = None, model: str | None = None) -> Plan:
    """Apply the rules to a fingerprint. ``seconds_per_image(model yaml, imgsz, classes)``: what one training image
    costs on the machine that will train, ``val_seconds_per_image`` what validating one costs (the integration
    measures both); with a budget, the plan says what the budget buys. ``model``: one the user gave, which
    replaces the plan's choice and is the one the budget's estimate counts."""
    if not fp.box_cls:
        raise ValueError(_no_defects(fp))
    plan = Plan(data=fp.data)
    _warn_data(fp, plan)
    imgsz = wanted = choose_imgsz(fp, plan)
    choose_batching(fp, plan)
    timer = None if seconds_per_image is None else with_validation(fp, seconds_per_image, val_seconds_per_image)
    budgeted = bool(budget_min) and timer is not None
    nbs = plan.train.get("nbs", ULTRALYTICS_NBS)
    # the width at the size yolo26n's steps buy, as its rule was measured; the size by the steps of the model trained
    # from the prior, planned or given (yolo26n's, as the budget rule's pairs were measured, for any other); the
    # model's head and the tiling hint at the size trained
    width_imgsz = budget_size(fp, budget_min, wanted, nbs, timer) if budgeted else wanted
    if budgeted:
        half = trades_width_for_steps(fp, budget_min, width_imgsz, nbs, timer)
        counted = MODEL_HALF if starts_from_prior(model or (MODEL_HALF if half else MODEL), fp) else MODEL
        imgsz = fit_imgsz_to_budget(fp, budget_min, wanted, plan, timer, counted)
    hint_tiling(fp, imgsz, plan)
    planned = choose_model(fp, imgsz, plan, budget_min, timer, width_imgsz)
    # the command reads model and imgsz first
    plan.train = {"model": planned if model is None else _given_model(model, plan), "imgsz": imgsz, **plan.train}
    if budget_min and timer is not None and imgsz == wanted:
        upscale_from_prior(fp, plan, budget_min, timer)
    choose_schedule(fp, budget_min, plan, seconds_per_image, val_seconds_per_image)
    plan.gradkit = {"clip": {"mode": "stock"}, "augment": choose_augmentation(fp, plan)}
    plan.choose("clip.mode", "stock", "benchmarks/stability.py (3 seeds): with SGD no policy came near the stock "
                "clip; with AdamW all were within noise up to 3x the base lr (short fine-tunes on one synthetic set)",
                provisional=True)
    choose_loss_gains(plan)
    choose_memory_format(plan)
    choose_start(plan, fp)
    return plan


def upscale_from_prior(fp: Fingerprint, plan: Plan, budget_min: float, seconds_per_image: SecondsPerImage) -> None:
    """PRIOR_UPSCALE times ``plan``'s size, which the budget rule kept at the size the data calls for, where that is
    the images' native size (as on the sets measured; not above MAX_IMGSZ), the plan starts the prior's model
    (MODEL_HALF) from the prior (:func:`starts_from_prior`) and the budget still buys it MIN_STEPS there by this
    machine's timer (the rule was measured at a timed budget; below MIN_STEPS the budget rule itself would train
    smaller); the size as it is otherwise. The model and tiling hints stay those of the smaller size."""
    wanted = plan.train["imgsz"]
    if (not starts_from_prior(plan.train["model"], fp) or wanted != native_imgsz(fp, wanted) or wanted >= MAX_IMGSZ
            or seconds_per_image(MODEL_HALF, wanted, len(fp.class_names)) is None):
        return
    size = min(_round_up(wanted * PRIOR_UPSCALE), MAX_IMGSZ)
    steps = budget_steps(fp, budget_min, plan.train.get("nbs", ULTRALYTICS_NBS), seconds_per_image, MODEL_HALF)
    imgsz = next(c for c in plan.choices if c.key == "imgsz")
    if steps(size) < MIN_STEPS:
        imgsz.reason += (f"; not {PRIOR_UPSCALE:g}x it from the prior ({size}): the budget would buy "
                         f"{MODEL_HALF} about {steps(size):.0f} optimizer steps there, under {MIN_STEPS}, the "
                         f"budget rule's own floor, which it would apply to that size (where the enlargement was "
                         f"measured: {PRIOR_UPSCALE_EVIDENCE}){_upscale_drift_note(steps(size), size)}")
        return
    imgsz.value, imgsz.provisional = size, True
    imgsz.reason = (f"{PRIOR_UPSCALE:g}x the {wanted} the data calls for (rounded up to {IMGSZ_STEP}): the budget "
                    f"affords that size, the images' native one, the plan starts {MODEL_HALF} from the defect "
                    f"prior, and {size} still buys it about {steps(size):.0f} optimizer steps ({MIN_STEPS} or more)"
                    f"{_upscale_drift_note(steps(size), size)}; {PRIOR_UPSCALE_EVIDENCE}; why {wanted}: "
                    f"{imgsz.reason}")
    plan.train["imgsz"] = size


def _upscale_drift_note(steps_up: float, size: int) -> str:
    """Whether the prior's enlargement to ``size`` would go the other way had the timer read TIMER_DRIFT faster or
    slower (the budget rule's own close call is noted by it)."""
    if steps_up < MIN_STEPS <= steps_up * TIMER_DRIFT:
        return _close_call([f"read {TIMER_DRIFT:g}x faster it would enlarge it to {size}"])
    if steps_up / TIMER_DRIFT < MIN_STEPS <= steps_up:
        return _close_call([f"read {TIMER_DRIFT:g}x slower it would not enlarge it"])
    return ""


def starts_from_prior(model: str, fp: Fingerprint) -> bool:
    """Whether the plan starts ``model`` from gradkit's defect prior: the model it was trained as (MODEL_HALF), on
    input of a channel count its first layer can take (PRIOR_INPUT_CHANNELS)."""
    return model == MODEL_HALF and fp.input_channels in PRIOR_INPUT_CHANNELS


def choose_start(plan: Plan, fp: Fingerprint) -> None:
    """gradkit's defect prior where the plan trains the model it was trained as (MODEL_HALF) on input its first
    layer can take (:func:`starts_from_prior`); from scratch else."""
    if plan.train["model"] == MODEL_HALF and not starts_from_prior(MODEL_HALF, fp):
        plan.choose("init.prior", "none (from scratch)", f"the data YAML says channels: {fp.input_channels}, so "
                    f"the model's first layer takes {fp.input_channels} channels, and the defect prior's takes "
                    f"{PRIOR_CHANNELS} (or, summed, {GRAY_CHANNELS})", provisional=True)
    elif plan.train["model"] == MODEL_HALF:
        plan.gradkit["init"] = {"prior": "defect"}
        gray = (f"; the data YAML says channels: 1, so the prior's first layer is loaded summed over its three input "
                f"channels, the same function on a gray image ({PRIOR_GRAY_EVIDENCE})"
                if fp.input_channels == GRAY_CHANNELS else "")
        plan.choose("init.prior", "defect (gradkit's defect prior)", PRIOR_EVIDENCE + gray, provisional=True)
    else:
        plan.choose("init.prior", "none (from scratch)", f"the defect prior holds {MODEL_HALF}'s weights and this "
                    f"plan trains {plan.train['model']}; with the half width: {PRIOR_EVIDENCE}", provisional=True)


def choose_memory_format(plan: Plan) -> None:
    """A CPU run keeps Ultralytics' NCHW: channels-last is faster, but its worth in mAP was not shown, it rounds
    coarser, and ``fastest`` could choose differently between two runs of one seed."""
    plan.choose("speed.memory_format", "contiguous (Ultralytics' NCHW)", MEMORY_FORMAT_EVIDENCE, provisional=True)


def choose_loss_gains(plan: Plan) -> None:
    plan.choose("cls (loss gain)", "Ultralytics' default", CLS_EVIDENCE, provisional=True)
    plan.choose("box, dfl (loss gains)", "Ultralytics' defaults", BOX_DFL_EVIDENCE, provisional=True)
    plan.choose("assigner candidates", "Ultralytics' (every anchor inside the box)", ASSIGN_EVIDENCE,
                provisional=True)
    plan.choose("assigner overlap", "Ultralytics' CIoU", NWD_EVIDENCE, provisional=True)
    plan.gradkit["assign"] = {"box_loss_per_object": True}
    plan.choose("box-loss weights", "each object's best anchor the same (assign.box_loss_per_object)",
                BOX_WEIGHT_EVIDENCE, provisional=True)


def write_plan(plan: Plan, fp: Fingerprint, out: str | Path) -> tuple[Path, Path]:
    """Write the plan (command, choices, fingerprint) to ``out`` and the gradkit configuration it
    refers to beside it (``<stem>.gradkit.yaml``). Refuses to write on or into any place of the dataset
    (:func:`gradkit.data.check.dataset_places`: the YAML, ``path:``, each split's folders and list files)."""
    import yaml

    from gradkit.data.check import dataset_place_of

    out = Path(out).resolve()
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise ValueError(f"out={out}: the plan is YAML; give a .yaml path")
    cfg = out.with_name(out.stem + ".gradkit.yaml")
    for f in (out, cfg):
        hit = dataset_place_of(f, fp.data)
        if hit is not None:
            label, place = hit
            raise ValueError(f"out={out} would write {'over' if place == f else 'inside'} the {label} {place}: "
                             "choose another folder (the dataset's files are never written into or overwritten)")
    for f in (out, cfg):
        if f.is_file() and not _written_by_plan(f):  # a plan of earlier is replaced: planning again means that
            raise ValueError(f"out={out}: {f} exists and was not written by gradkit plan: give another out= (or "
                             "move that file)")
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"{PLAN_MARK}; each choice and its reason is in {out.name}\n"
                   + yaml.safe_dump(plan.gradkit, sort_keys=False, allow_unicode=True), encoding="utf-8")
    doc = {**plan.as_dict(str(cfg)), "fingerprint": fp.summary()}
    out.write_text(f"{PLAN_MARK}: the command, each choice with its reason, the dataset's fingerprint\n"
                   + yaml.safe_dump(doc, sort_keys=False, width=120, allow_unicode=True), encoding="utf-8")
    return out, cfg


#: The first line of each file ``gradkit plan`` writes: only such a file is written over by a later plan.
PLAN_MARK = "# written by gradkit plan"


def _written_by_plan(path: Path) -> bool:
    """Whether ``path`` starts with :data:`PLAN_MARK`, or is a plan of an earlier release (no mark: a mapping with a
    plan's ``command`` and ``fingerprint``)."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    if text.startswith(PLAN_MARK):
        return True
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(doc, dict) and {"command", "fingerprint"} <= set(doc)


PLAN_ARGS = {"data": None, "budget": None, "out": "plan.yaml", "split": "train"}


def budget_minutes(value: Any, command: str) -> float:
    """``budget=`` as minutes, or a one-line error naming ``command``."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0 or value == float("inf"):
        raise SystemExit(f"{command}: budget= takes minutes (a positive number), got {value!r}")
    return float(value)


def plan_command(args: list[str], seconds_per_image: SecondsPerImage | None = None,
                 val_seconds_per_image: SecondsPerImage | None = None,
                 model_warning: Callable[[str], str | None] | None = None) -> int:
    """``gradkit plan data=DATA.yaml [budget=MIN] [out=plan.yaml] [split=train]``; ``seconds_per_image`` and
    ``val_seconds_per_image`` measure this machine for the budget's estimate; ``model_warning(model)``: what the
    integration knows the planned model name will build here that the plan did not time, if anything."""
    import yaml

    from gradkit.data.fingerprint import fingerprint_dataset

    opts = dict(PLAN_ARGS)
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or key not in opts:
            raise SystemExit(f"gradkit plan: unknown argument {arg!r}{did_you_mean(key, opts, '=')}; arguments: "
                             f"{', '.join(k + '=' for k in opts)}")
        opts[key] = value
    if not opts["data"]:
        defaults = " ".join(f"[{k}={v}]" for k, v in PLAN_ARGS.items() if v is not None)
        raise SystemExit(f"gradkit plan data=DATA.yaml [budget=MIN] {defaults}")
    budget = None if opts["budget"] is None else budget_minutes(yaml.safe_load(opts["budget"]), "gradkit plan")
    try:
        fp = fingerprint_dataset(opts["data"], split=opts["split"])
        plan = make_plan(fp, budget, seconds_per_image, val_seconds_per_image)
    except ValueError as exc:
        raise SystemExit(f"gradkit plan: {exc}") from None
    warning = None if model_warning is None else model_warning(plan.train["model"])
    plan.warnings += [warning] if warning else []
    try:
        out, cfg = write_plan(plan, fp, opts["out"])
    except ValueError as exc:
        raise SystemExit(f"gradkit plan: {exc}") from None
    except OSError as exc:  # out= in a folder that cannot be made or written
        raise SystemExit(f"gradkit plan: out={opts['out']}: cannot write {exc.filename}: {exc.strerror}") from None
    for c in plan.choices:
        print(f"{c.key} = {c.value}{'  (provisional)' if c.provisional else ''}\n    {c.reason}")
    for w in plan.warnings:
        print(f"warning: {w}")
    print(f"\nplan: {out}\ngradkit config: {cfg}\n\n{plan.command(str(cfg))}")
    return 0
