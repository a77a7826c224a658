"""``mmldm generate``: sounding videos from a model folder (``docs/generation.md``).

    mmldm generate --model models/shapes --task svg --n 4 --out samples/
    mmldm generate --model models/shapes --task a2v --audio rain.wav --guidance 1 9 --out a2v/
    mmldm generate --task long --seconds 6.4 --out long/        # the built-in model
    mmldm generate --model big/ --low-memory --out samples/       # one network in memory at a time
    mmldm generate --model text-model/ --prompt "a green square and a square wave, rising" --text-guidance 3 --out t/

Every bad input (unknown task, missing file, a file without the needed stream, a
clip shorter than one clip, a non-positive length) is one ``mmldm: error:`` line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..generator.generation import CRITICS, FRAME_DECODERS
from ..generator.tasks import TASKS
from .commands import COMMANDS


def register(sub: argparse._SubParsersAction) -> None:
    tasks = "; ".join(f"{name}: {spec.help}" for name, spec in TASKS.items())
    parser = sub.add_parser(
        "generate", help=COMMANDS["generate"],
        description=f"Tasks -- {tasks}.")
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder (model_index.json, vae/, autoencoder/, generator/, audio.yaml); "
                             "default: the built-in model")
    parser.add_argument("--task", default="svg", metavar="TASK", help=f"one of {', '.join(TASKS)} (default svg)")
    parser.add_argument("--n", type=int, default=1, help="number of samples (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--prefix", default="sample", help="output file name prefix (default 'sample')")
    parser.add_argument("--overwrite", action="store_true",
                        help="--out holds another run's outputs: replace them (default: refuse, so runs never mix)")
    parser.add_argument("--audio", type=Path, default=None, help="audio (or video) file for a2v and audio-continuation")
    parser.add_argument("--video", type=Path, default=None, help="video file for v2a and video-continuation")
    parser.add_argument("--seconds", type=float, default=None,
                        help="task long: length to generate in seconds; with --audio / --video: the length of the "
                             "span of the file to use (default: to its end)")
    parser.add_argument("--start", type=float, default=None,
                        help="with --audio / --video: where the span of the file starts, in seconds (default 0)")
    parser.add_argument("--continue-seconds", type=float, default=None,
                        help="audio-continuation / video-continuation: how much sounding video follows the span, in "
                             "seconds (default: one clip)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    parser.add_argument("--decoder-steps", type=int, default=None,
                        help="sampler steps of the autoencoder's signal decoder (DDIM; Euler for flow decoders; default: the model's)")
    parser.add_argument("--sampler", default=None, help="ddim or dpmpp (epsilon models), euler or heun (flow models)")
    parser.add_argument("--guidance", type=float, nargs="+", default=None, metavar="SCALE",
                        help="guidance scales: AUDIO VIDEO, or one for both (1 = none; default: the model's)")
    parser.add_argument("--sync-guidance", type=float, default=None, metavar="STEP",
                        help="a2v: pull the video towards the model's own video-to-audio prediction of the given "
                             "audio, STEP per sampler step (0 = off; default: the model's)")
    parser.add_argument("--candidates", type=int, default=None, metavar="K",
                        help="sample K latent candidates per output and decode the one the model's own "
                             "critics find most in sync (1 = off; default: the model's)")
    parser.add_argument("--critics", nargs="+", choices=CRITICS, default=None, metavar="NAME",
                        help=f"the critics that rank the candidates ({', '.join(CRITICS)}; several: lowest sum "
                             "of ranks; default: the model's)")
    parser.add_argument("--frame-decoder", choices=FRAME_DECODERS, default=None,
                        help="what decodes the video frames: full (the KL-VAE decoder) or light (the model folder's "
                             "light frame decoder, frame_decoder/; the audio image keeps the full decoder); "
                             "default: the model's")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="samples generated and written at a time (memory holds one batch; the files are the "
                             "same for any batch size; default 16)")
    parser.add_argument("--class", dest="class_label", type=int, default=None, help="class id (class-conditional models)")
    parser.add_argument("--prompt", default=None, metavar="TEXT",
                        help="text-conditioned models: what to generate, e.g. \"a green square and a square wave, "
                             "rising\" (default: the null text)")
    parser.add_argument("--text-guidance", type=float, default=None, metavar="SCALE",
                        help="text-conditioned models: guidance between the prompt and the null text (1 = none; "
                             "default: the model's)")
    parser.add_argument("--text-encoder", type=Path, default=None, metavar="DIR",
                        help="the local CLIP text model folder of a text-conditioned model whose folder does not "
                             "carry one (never downloaded)")
    parser.add_argument("--vocoder", default=None, metavar="PATH",
                        help="another vocoder than the model folder's: griffin-lim, or a HiFi-GAN checkpoint (a "
                             "generator file with config.json beside it, or their folder) fitting the model's audio")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else the CPU), cpu or cuda")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto (default): the networks run under bfloat16 autocast where the device multiplies "
                             "bf16 natively (GPUs, CPUs with avx512_bf16 / amx), else in float32; bf16 elsewhere is "
                             "emulated and many times slower; recorded in settings.json")
    parser.add_argument("--low-memory", action="store_true",
                        help="sample with little memory: the generator, signal decoder, frame decoder and vocoder "
                             "take the device one at a time, each read from the model folder when it runs, with "
                             "bfloat16 weights where the device multiplies bf16 natively (else float32, said in "
                             "one line); reading a stage's weights costs seconds each time it runs")
    parser.add_argument("--no-preview", action="store_true", help="do not write the PNG previews")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..devices import resolve_device, resolve_precision
    from ..files import check_input_file, check_writable_folder
    from ..generator.tasks import resolve_task
    from ..pipeline import SoundingVideoPipeline
    from ..pipeline.output import check_output_folder, check_prefix, save_in_batches

    # cheap checks first: a wrong task or input fails before any model is loaded
    resolve_task(args.task, args.audio, args.video, args.seconds, args.start, args.continue_seconds)
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if args.text_encoder is not None and not args.text_encoder.is_dir():
        from ..errors import WeightsError

        raise WeightsError(args.text_encoder, "--text-encoder", "not found: give a local CLIP text model folder")
    for flag, given in (("--audio", args.audio), ("--video", args.video)):
        if given is not None:
            check_input_file(given, f"{flag} of task {args.task}")
    check_prefix(args.prefix)
    check_writable_folder(args.out)
    check_output_folder(args.out, args.n, args.prefix, args.overwrite)  # before the model loads
    device = resolve_device(args.device)
    for flag, value in (("--batch-size", args.batch_size), ("--candidates", args.candidates)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    pipe = SoundingVideoPipeline.from_pretrained(args.model, device=device,
                                                 dtype=resolve_precision(args.precision, device), vocoder=args.vocoder,
                                                 low_memory=args.low_memory, text_encoder=args.text_encoder)
    if args.prompt and not pipe.takes_text:  # before any sampling
        raise ConfigError("--prompt: this model has no text conditioning (its generator takes no text)")

    def make_batch(count: int, first_seed: int):
        return pipe.generate(task=args.task, n=count, steps=args.steps, sampler=args.sampler,
                             guidance=args.guidance, seed=first_seed, audio=args.audio, video=args.video,
                             seconds=args.seconds, start=args.start, continue_seconds=args.continue_seconds,
                             class_label=args.class_label, decoder_steps=args.decoder_steps,
                             sync_guidance=args.sync_guidance, candidates=args.candidates, critics=args.critics,
                             frame_decoder=args.frame_decoder,
                             prompt=args.prompt, text_guidance=args.text_guidance,
                             progress=not args.quiet)

    videos, settings = save_in_batches(make_batch, args.n, args.seed, args.batch_size, args.out,
                                       prefix=args.prefix, preview=not args.no_preview, overwrite=args.overwrite)
    print(f"wrote {len(videos)} sounding video(s) ({settings['frames']} frames at {settings['fps']:g} fps, "
          f"{settings['sample_rate']} Hz) to {args.out}:")
    for path in videos:
        print(f"  {path}")
    print(f"settings: {Path(args.out) / 'settings.json'}")
    return 0
