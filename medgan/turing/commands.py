"""``medgan turing deck`` and ``medgan turing score``: thin wrappers over ``build_deck`` and ``score``."""

from __future__ import annotations

from pathlib import Path

from medgan.data.prepared import GAN_SPLIT, SPLIT_NAMES
from medgan.io import write_json
from medgan.turing.deck import build_deck, parse_window
from medgan.turing.score import results_frame, results_text, score


def add_cli(sub) -> None:
    p = sub.add_parser("turing", help="visual Turing test: build a 50/50 deck page, score raters' CSVs",
                       description="Visual Turing test (paper §4.3): an offline HTML deck of real and generated "
                                   "images with a separate answer key, and the scoring of the raters' CSVs.")
    tsub = p.add_subparsers(dest="turing_command", metavar="{deck,score}")
    tsub.required = True

    d = tsub.add_parser("deck", help="write DIR/deck.html (for the raters) and DIR/answer-key.json (keep it)")
    d.add_argument("--real", required=True, help="real (or phantom) prepared set folder")
    d.add_argument("--generated", required=True, help="generated prepared set folder (medgan generate --out)")
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--n", type=int, default=100, help="images in the deck, half real, half generated (default 100)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--split", default=GAN_SPLIT, help=f"split of --real to draw from ({', '.join(SPLIT_NAMES)}; "
                                                      f"default {GAN_SPLIT}: the patients the GAN learnt from)")
    d.add_argument("--masks", action="store_true", help="add a mask-overlay toggle (M) to every image")
    d.add_argument("--window", default="full", help="grey-level window: full (the prepared range), pooled "
                                                    "(1st-99th percentile of the deck) or LO,HI in [-1, 1]")
    d.add_argument("--display-px", type=int, default=512, help="on-screen image size in CSS pixels")
    d.add_argument("--overwrite", action="store_true", help="replace a deck already in --out")
    d.set_defaults(func=_cmd_deck)

    s = tsub.add_parser("score", help="score raters' exported CSVs against the answer key")
    s.add_argument("--key", required=True, help="answer-key.json of the deck")
    s.add_argument("csv", nargs="+", help="CSV files exported from the deck page")
    s.add_argument("--out", default=None, help="write the results as JSON here")
    s.set_defaults(func=_cmd_score)


def _cmd_deck(args) -> int:
    deck = build_deck(args.real, args.generated, args.out, n=args.n, seed=args.seed, split=args.split,
                      masks=args.masks, window=parse_window(args.window), display_px=args.display_px,
                      overwrite=args.overwrite)
    print(f"deck {deck.deck_id}: {deck.n} images")
    print(f"  give the raters: {deck.page}")
    print(f"  keep (answer key, never send it): {deck.key}")
    return 0


def _cmd_score(args) -> int:
    results = score(args.key, args.csv)
    print(results_frame(results).to_string())
    print()
    print(results_text(results))
    if args.out:
        write_json(Path(args.out), results)
        print(f"written {args.out}")
    return 0
