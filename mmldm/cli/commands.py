"""Every ``mmldm`` command and its one-line help, in ``--help`` order.

Kept apart from the command modules so that ``mmldm --help`` lists them without importing
any (``mmldm.cli.main`` imports only the module of the command being run). A command
``NAME`` lives in ``mmldm/cli/NAME.py`` with ``register(subparsers)``, which adds the parser
``NAME`` with ``help=COMMANDS[NAME]``; its module imports torch and friends only inside the
command's function.
"""

COMMANDS: dict[str, str] = {
    "demo": "generate a few sounding videos with the built-in model and show where they are",
    "data": "make and look at datasets",
    "train": "train a stage (vae, autoencoder, generator)",
    "cache": "encode a dataset into a latent cache (KL-VAE latents)",
    "export": "write training checkpoints as loadable model folders",
    "generate": "generate sounding videos (mp4 + wav + png preview) from a model folder",
    "serve": "a web app (Gradio) generating sounding videos in the browser, one model loaded for all requests",
    "reconstruct": "encode a clip with the multi-modal autoencoder, decode it back, and measure the difference",
    "evaluate": "score generated clips against reference videos (FVD, KVD, FAD, AV-Align, Sounding Shapes measures)",
    "convert": "convert a public checkpoint to the layout mmldm loads",
    "presets": "list the DiT generator presets with parameters and FLOPs (vs. the paper's Table 4)",
    "recipe": "reproduce a shipped model end to end (data, training, export, evaluation)",
}
