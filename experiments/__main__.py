"""`python -m experiments COMMAND [key=value ...]`

commands:
  train      train one run (resumes an existing run folder)      python -m experiments train --help
  warmstart  build + supervised warm-start a size preset          python -m experiments warmstart task.name=arithmetic model.name=tiny
  sweep      run a grid locally or as one SLURM array job         python -m experiments sweep GRID.yaml [executor=local|slurm] [--wait]
  status     table of the runs of a sweep folder (or of one run)  python -m experiments status SWEEP_DIR|RUN_DIR
  samples    print a run's logged completions                     python -m experiments samples RUN [--step N] [--incorrect]
  export     a run's last checkpoint as an HF directory           python -m experiments export RUN [--out DIR]
  build-model  an untrained size preset as an HF directory       python -m experiments build-model --size tiny --tokenizer bpe --out DIR
"""
import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        from experiments.train import main as run

        return run(rest)
    if command == "warmstart":
        from experiments.train import main_warmstart as run

        return run(rest)
    if command == "sweep":
        from experiments.sweep import main_sweep as run

        return run(rest)
    if command == "status":
        from experiments.sweep import main_status as run

        return run(rest)
    if command == "samples":
        from experiments.samples import main as run

        return run(rest)
    if command == "build-model":
        from experiments.models.presets import main_build_model as run

        return run(rest)
    if command == "export":
        from experiments.export import main as run

        return run(rest)
    print(f"error: unknown command {command!r}; valid: train, warmstart, sweep, status, samples, export, build-model",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
