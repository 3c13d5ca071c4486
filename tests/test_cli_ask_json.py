"""`rmt-lens ask --json` records what the printed lines claim: the verdict, and the carrier segment only
when the lines name one (memory_segment alone is the largest positive credit, named or not)."""
from __future__ import annotations

import json
import subprocess
import sys

PROSE = ("The morning was grey over the harbour town, and the fishing boats rocked gently at their moorings. "
         "Old Tomas sat by his window mending a net, as he had done every morning for forty years. The baker's "
         "boy ran past with a basket of bread, whistling a tune nobody remembered the words to. Mary went to the "
         "kitchen. The smell of coffee drifted out into the lane, and a cat stretched on the warm stones of the "
         "wall. Later the wind came up from the sea, carrying the cries of gulls and the faint ringing of the "
         "church bell. People hurried about their business, talking of the weather, of the price of fish, of the "
         "new schoolteacher who had arrived from the city. ")
FILLER = ("The afternoon passed slowly, and the shadows lengthened across the square while the merchants "
          "counted their coins and the children played by the fountain. ")


def test_the_json_names_a_carrier_only_when_the_printed_lines_do(tmp_path):
    doc = tmp_path / "story.txt"
    doc.write_text(PROSE + FILLER * 4)
    out = tmp_path / "answer.json"
    run = subprocess.run([sys.executable, "-m", "rmt_core", "ask", str(doc), "-q", "Where is Mary?",
                          "--threads", "1", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    record = json.loads(out.read_text())
    assert record["answer"] == "kitchen" and record["correct"] is True
    assert "“Mary went to the kitchen.”" in record["verdict"] and record["verdict"] in run.stdout
    claim = record["carrier"]
    assert claim is not None and claim["largest"] == record["memory_segment"]
    if claim["segment"] is None:  # the lines say no earlier segment carries a clear credit
        assert "No earlier segment carries a clear credit" in run.stdout
        assert claim["statement"].rstrip(".") in run.stdout
    else:
        assert claim["share"] >= 0.05 and f"segment {claim['segment']}" in run.stdout
