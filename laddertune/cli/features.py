"""``laddertune features``: extract image grid features once, with a frozen vision encoder, into HDF5.

Example::

    laddertune features --images data/coco/images --output data/coco/clip_features.h5
    laddertune features --images imgs/ --output f.h5 --encoder ./my-clip-vision --pool 0

The file holds one group per image id (the file stem) with ``features`` (N, F), ``boxes`` (N, 4, pixels),
``img_h`` and ``img_w``: the VL-T5 / VL-Adapter layout (see :mod:`laddertune.vision.features`).
"""

from __future__ import annotations

# The encoder's name only: the feature extractor (torch, transformers, h5py) loads when the command runs.
DEFAULT_ENCODER = "openai/clip-vit-base-patch32"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "features",
        help="extract image grid features with a frozen vision encoder (HDF5, keyed by image id)",
        description="Run a frozen vision encoder once over a folder of images and store grid features in HDF5.",
    )
    p.add_argument("--images", required=True, help="folder of image files; their stems are the image ids")
    p.add_argument("--output", required=True, help="HDF5 file to write (appears only when complete)")
    p.add_argument(
        "--encoder",
        default=DEFAULT_ENCODER,
        help=f"vision model name or folder, loaded with AutoModel + AutoImageProcessor (default {DEFAULT_ENCODER})",
    )
    p.add_argument(
        "--pool",
        type=int,
        default=6,
        help="max-pool the grid to POOL x POOL (default 6, as the paper's 36 regions; 0 keeps the encoder's grid)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from ..vision.features import extract_features, image_files

    total = len(image_files(args.images))
    with tqdm(total=total, unit="img", desc="features") as bar:
        count = extract_features(
            args.images,
            args.output,
            encoder=args.encoder,
            pool=args.pool or None,
            batch_size=args.batch_size,
            device=args.device,
            progress=bar.update,
        )
    print(f"wrote features of {count} images to {args.output}")
    return 0
