"""Every default number of the method and the experiment, defined once; functions, configs and the command line
import them from here (the paper's values where it gives one, section 3)."""

#: Slope of the sigmoid that turns the model's logits into the mask the regressor reads (``sigmoid(k * logits)``):
#: steeper than 1 so that the regressor sees a nearly binary mask (paper 3.3).
SHARPNESS = 5.0
#: Adam's step size on the prompt's coordinates, in pixels (paper 3.3: 10, no weight decay).
LR = 10.0
#: Model calls per evolution (the budget every optimiser shares).
STEPS = 30
#: Early stopping of evolution: stop once the best allowed score has not risen by more than ``EVOLVE_MIN_GAIN`` for
#: ``EVOLVE_PATIENCE`` model calls in a row. None (or 0): no early stopping, every run spends its budget (the paper);
#: both still to be chosen on a validation split.
EVOLVE_PATIENCE = None
EVOLVE_MIN_GAIN = 1e-3
#: Side of the square image and mask the segmentation regressor reads.
REGRESSOR_SIZE = 128
#: Regressor training: epochs, batch size, learning rate (paper 3.2: 200, 32, 0.001).
EPOCHS = 200
BATCH_SIZE = 32
REGRESSOR_LR = 1e-3
#: Regressor training stops after this many epochs without a new best validation loss; 0 (or None): all ``EPOCHS``
#: (the paper's preset: --epochs 200 --patience 0).
REGRESSOR_PATIENCE = 0
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
#: The user prompts an experiment simulates: the structure's centroid as a click, or a jittered box.
SIMULATED_PROMPTS = ("click", "box")
#: What can drive evolution, and how the prompt moves.
SCORERS = ("regressor", "confidence", "blend", "oracle")
#: The do-no-harm rule's name where scores are listed (it picks among the regressor's evolution's steps).
RULE = "do-no-harm"
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
#: The structure a command segments when none is named (the paper's).
STRUCTURE = "left_lung"
#: Nominal coverage of a shipped regressor's interval of the predicted Dice (split-conformal on validation).
CONFORMAL_LEVEL = 0.90
