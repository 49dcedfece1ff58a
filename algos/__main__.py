"""`python -m algos`: print the preset table (knob x preset), generated from the code."""
from algos import PRESETS
from algos.config import knob_names


def preset_table(names=None, *, only_differing: bool = False) -> str:
    """Markdown table of every knob of every preset; rows where presets differ are marked *."""
    names = list(names or PRESETS)
    rows = ["| knob | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for knob in knob_names():
        if knob == "name":
            continue
        values = [getattr(PRESETS[name], knob) for name in names]
        differs = len({repr(v) for v in values}) > 1
        if only_differing and not differs:
            continue
        label = f"**{knob}**" if differs else knob
        rows.append(f"| {label} | " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    print("Presets over one set of knobs (bold: knobs where presets differ).")
    print("GRPO = PPO - value head: compare the ppo and grpo columns.\n")
    print(preset_table(only_differing="--diff" in sys.argv))
