"""Every default number of the method and the experiment, defined once; functions, configs and the command line
import them from here (the paper's values where it gives one, section 3)."""

from typing import Any

#: Slope of the sigmoid that turns the model's logits into the mask the regressor reads (``sigmoid(k * logits)``):
#: steeper than 1 so that the regressor sees a nearly binary mask (paper 3.3).
SHARPNESS = 5.0
#: Adam's step size on the prompt's coordinates, in pixels (paper 3.3: 10, no weight decay).
LR = 10.0
#: Model calls per evolution (the budget every optimiser shares).
STEPS = 30
#: The largest budget of one evolution: 100 times the most any chapter spends (100 calls), minutes of decoder calls
#: on a CPU; a larger one is a typing slip that would run for days.
MAX_STEPS = 10_000
#: Early stopping of evolution: stop once the best allowed score has not risen by more than ``EVOLVE_MIN_GAIN`` for
#: ``EVOLVE_PATIENCE`` model calls in a row (0 or None: every run spends its budget, as the paper's). Chosen on JSRT's
#: validation split, 30 images, the regressor's score (benchmarks/results/early_stopping_*.md): the fewest calls whose
#: share of the oracle's gain stays within 0.02 of the full 31-call run's for both models: LiteMedSAM 10.8 calls,
#: 0.741 against 0.744; SAM-Nano 12.3 calls, 0.692 against 0.708 (patience 3 and 4 each fell 0.02 short on one).
EVOLVE_PATIENCE = 5
EVOLVE_MIN_GAIN = 1e-3
#: Side of the square image and mask the segmentation regressor reads.
REGRESSOR_SIZE = 128
#: The largest regressor input side: the training set holds every synthetic mask at this size (1024: about 4 MB a
#: mask), and a larger input only upsamples the model's 256-px mask. Far larger sides exhaust memory on the first image.
MAX_REGRESSOR_SIZE = 1024
#: The least ``--max-images`` (images per split): a correlation needs 3 test images.
MIN_MAX_IMAGES = 3
#: Regressor training: epochs, batch size, learning rate (paper 3.2: 200, 32, 0.001).
EPOCHS = 200
BATCH_SIZE = 32
REGRESSOR_LR = 1e-3
#: Regressor training stops after this many epochs without a new best validation loss; 0: all ``EPOCHS`` (the paper's
#: 200: ``--epochs 200 --regressor-patience 0``). On JSRT (LiteMedSAM, left lung) the validation loss reached its low
#: by epoch 33 of 200 and rose after it while the training loss kept falling.
REGRESSOR_PATIENCE = 20
#: Regressor training's learning-rate schedules (``--regressor-schedule``): ``constant`` (the paper's Adam at one rate)
#: and ``plateau`` (the rate multiplied by ``LR_DECAY_FACTOR`` after ``LR_DECAY_PATIENCE`` epochs without a lower
#: validation loss).
LR_SCHEDULES = ("constant", "plateau")
REGRESSOR_SCHEDULE = "constant"
LR_DECAY_PATIENCE = 4
LR_DECAY_FACTOR = 0.5
#: Regressor training's arithmetic (``--regressor-precision``): ``float32`` (the paper's), or ``bfloat16``: the
#: training batches' forward pass under torch's bfloat16 autocast, with the weights, the loss, the optimiser and the
#: validation that picks the epoch in float32. bfloat16 pays on a CPU with native bfloat16 arithmetic (Intel AMX or
#: AVX512-BF16); elsewhere it is emulated (benchmarks/results/regressor_precision_sam_nano.md).
REGRESSOR_PRECISIONS = ("float32", "bfloat16")
REGRESSOR_PRECISION = "float32"
#: Weight of the within-image loss beside the MSE in regressor training
#: (:func:`sampot_lib.method.regressor_training.fit_regressor`); 0 trains on the MSE alone. The within-image loss is
#: the MSE of the score's differences between two masks of one image against their Dice differences: what evolution
#: and the do-no-harm rule read (a step's predicted gain). On JSRT's validation split (LiteMedSAM, heart) weights 1
#: and 3 raised the gain but lowered the ranking along evolution's paths (benchmarks/results/ranking_loss_heart.md): no
#: clear win.
RANK_WEIGHT = 0.0
#: Masks of one image that sit side by side in a training batch when ``RANK_WEIGHT`` > 0 (the batch holds
#: ``BATCH_SIZE // RANK_GROUP`` images), so that each batch has pairs to compare.
RANK_GROUP = 4
#: The shortest side, in pixels, of an image a model segments (SAM's encoder patches are 16 px); ``sampot data check``
#: refuses smaller images with the same bound.
MIN_IMAGE_SIDE = 16
#: The most pixels (width x height, times frames) an image file may hold: a larger one is refused from its header,
#: before its pixels are decoded (a decompression bomb, a huge DICOM). 64 million: 8000 x 8000; a chest X-ray
#: detector gives at most about 4300 x 4300.
MAX_IMAGE_PIXELS = 64_000_000
#: Sides of a phantom (``sampot data phantom --size``): at least 64 px (its anatomy is drawn at that scale), at most
#: the side of the largest image sampot reads (the square of MAX_IMAGE_PIXELS).
MIN_PHANTOM_SIZE = 64
MAX_PHANTOM_SIZE = 8_000
#: The regressor's training set clicks this many pixels outside the structure (paper 3.2: "an offset of 5 pixels"); a
#: mask that leaves no pixel at that distance cannot be a training image.
OUTSIDE_OFFSET = 5.0
#: The most torch threads ``$SAMPOT_THREADS`` may ask for: above any machine's cores (more threads than cores warn),
#: and far below the C integer torch stores them in.
MAX_THREADS = 1024
#: Level-set (synthetic) masks per training image, and model prompts outside the structure (paper 3.2: 3).
N_SYNTHETIC = 16
N_OUTSIDE = 3
#: A simulated user's box: each side moved by up to this fraction of the structure's size.
BOX_JITTER = 0.10
#: Safeguards of an evolved prompt: its largest move (fraction of the image's longer side), the least IoU of its mask
#: with the user's, the largest ratio of the two masks' areas.
TRUST_RADIUS = 0.15
MIN_OVERLAP = 0.3
MAX_AREA_RATIO = 2.0
#: A box keeps at least this width and height (fraction of the image's longer side): always on.
MIN_BOX_SIZE = 0.02
#: The safeguards as a run's config stores them: the defaults, and the paper's setting (only the image border).
SAFEGUARDS_ON = {"keep_in_image": True, "trust_radius": TRUST_RADIUS, "min_overlap": MIN_OVERLAP,
                 "max_area_ratio": MAX_AREA_RATIO, "min_box_size": MIN_BOX_SIZE}  # fmt: skip
SAFEGUARDS_OFF = SAFEGUARDS_ON | {"trust_radius": None, "min_overlap": None, "max_area_ratio": None}
#: The paper's subject split, train / val / test (41 / 28 / 53 subjects).
PAPER_FRACTIONS = (41, 28, 53)
#: Every kind of prompt (:attr:`sampot_lib.method.prompts.Prompt.kind`): one click, several, a box, a box with clicks.
PROMPT_KINDS = ("click", "box", "clicks", "box+clicks")
#: The user prompts an experiment simulates: the structure's centroid as a click, or a jittered box.
SIMULATED_PROMPTS = ("click", "box")
#: What can drive evolution, and how the prompt moves.
SCORERS = ("regressor", "confidence", "blend", "oracle")
#: The do-no-harm rule's name where scores are listed (it picks among the regressor's evolution's steps).
RULE = "do-no-harm"
#: Where a run of several seeds records the rule with one margin, chosen on every seed's validation evolutions together.
RULE_POOLED = "do-no-harm (pooled)"
OPTIMIZERS = ("adam", "cmaes", "random")
#: Models whose mask decoder scores a population of prompts (CMA-ES, random search) in one call faster than one by
#: one on a CPU (8 boxes, 1 thread: SAM-Nano 0.39 x the time per prompt; LiteMedSAM 1.67 x, its 64 x 64 x
#: 256 image side per prompt no longer fits the cache, so it and SAM's ViTs score one prompt at a time).
BATCHED_MODELS = ("sam_nano",)
#: Where a model's image encoder runs: "torch", "onnx" (onnxruntime, on the CPU), or "auto": onnxruntime for the
#: models whose encoder it runs faster here (LiteMedSAM: about half torch's time on 2 CPU cores) when the
#: ``onnx`` extra is installed and the model is on the CPU, else torch.
ENCODER_BACKENDS = ("auto", "torch", "onnx")
ENCODER_BACKEND = "auto"
#: Largest difference an exported image encoder's features may have from torch's (absolute, on a test input);
#: beyond it the export is refused and torch encodes.
ONNX_ENCODER_TOLERANCE = 1e-3
#: Largest evolution step in pixels: a step longer than any image's side only slams the prompt into the border,
#: and larger values overflow float32 in Adam's update (1e39 does).
MAX_LR = 10_000.0
#: Steepest sigmoid: at 1000 the mask is already a hard 0/1 step; far larger values overflow float32.
MAX_SHARPNESS = 1_000.0
#: A change of Dice within this is "unchanged" (noise: about one pixel row of a lung's boundary at 256 px).
UNCHANGED_TOL = 0.005
#: A loss of more than this much Dice counts as a drop ("drops" in a summary).
DROP = 0.05
#: A drop of this much Dice is what the paper's figure 6 shows as a catastrophe (a mask outside the lung).
CATASTROPHE_DROP = 0.2
#: The most a do-no-harm rule may cost an image: a drop beyond this is harm.
HARM_TOLERANCE = 0.02
#: Calibration (``sampot calibrate``): the share of the labelled images kept out of fine-tuning to check it (at least
#: one image), and the fewest labelled images (two to fine-tune on: batch norm needs two samples a batch; one to
#: check on).
CHECK_FRACTION = 0.3
MIN_LABELLED = 3
#: Fine-tuning's defaults: the training's learning rate and 30 epochs, the best epoch kept. On 128 px phantoms with
#: a label-convention shift (masks dilated by 6 px), 7 labelled images and sam_nano, lr 1e-3 / 30 epochs gave the
#: lowest error on 14 unseen images of 1e-4, 3e-4 and 1e-3 at 10 and 30 epochs (r 0.86 -> 0.985; MSE 0.022 -> 0.002).
TUNE_EPOCHS = 30
TUNE_LR = 1e-3
#: The structure a command segments when none is named (the paper's).
STRUCTURE = "left_lung"
#: Nominal coverage of a shipped regressor's interval of the predicted Dice (split-conformal on validation).
CONFORMAL_LEVEL = 0.90
#: ``sampot app``: the most pages served at once (each is a kernel with its own copy of the model; a page past it
#: gets a "busy, try again in a minute" page), and the minutes a page may stay idle before its kernel is shut down
#: and its place freed (0: never). Each kernel holds about the RSS the README's app section gives.
MAX_SESSIONS = 4
MOST_SESSIONS = 64
IDLE_MINUTES = 30.0
MOST_IDLE_MINUTES = 24 * 60.0
#: The port ``sampot app`` serves on.
APP_PORT = 8866
#: The most local Dask worker processes per usable core (``--workers``): more only wait on each other.
WORKERS_PER_CORE = 4
#: Seconds a Dask scheduler's address (``--scheduler``) gets to accept a connection before a run starts.
SCHEDULER_TIMEOUT = 5.0


#: Named sets of settings. "paper": the paper's settings (Sathish et al., sections 3.2-3.3) where it gives them, and
#: our reading where it is silent (steps, sharpness and the number of synthetic masks; see the README).
#: Each preset's safeguards are a word ("off": only the image border limits the prompt), made a dict when applied.
#: The paper's values are written out, not taken from the defaults above: a changed default must not change them.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "safeguards": "off",  # the paper moves the click freely
        "epochs": 200,  # paper: 200 epochs, batch 32, Adam, lr 1e-3, best validation loss
        "batch_size": 32,
        "regressor_lr": 1e-3,
        "max_images": None,  # all images
        "split_fractions": [float(f) for f in PAPER_FRACTIONS],  # 41 / 28 / 53 subjects
        "n_outside": 3,  # 3 band clicks + 3 outside clicks = the paper's 6 model masks per image
        "n_synthetic": 16,  # our reading: the paper's 901 train masks over 41 subjects leave ~16 level sets a subject
        "steps": 30,  # our reading: the paper does not give the number of Adam steps
        "lr": 10.0,  # paper: step size 10
        "sharpness": 5.0,  # our reading: the paper says only "a steeper slope"
        "prompt": "click",  # paper: one positive click at the centroid
        "optimizer": "adam",
        "scorers": ["regressor"],
    },
}
