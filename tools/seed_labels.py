"""Writes annotations/seeds.jsonl: splitter boundaries + the hand annotation below.

Run once when the seed annotation changes; the validator checks the result.
Labels: (un_treaty, multistakeholder, bilateral_cbm, rationale); "-" = none.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diplostance.text import split_sentences

F, A, N = "favor", "against", "none"
LABELS = {
    "000_7f1f4f758ab52af3": [
        (N, N, N, "Site language switcher (boilerplate)."),
        (F, N, N, "Headline: both presidents back a UN-sponsored information-security convention."),
        (N, N, N, "Dateline."),
        (
            F,
            N,
            N,
            "Both presidents support developing a convention under UN auspices and UN norms of responsible behaviour.",
        ),
        (
            F,
            N,
            N,
            "Quoted statement calls for universal rules under UN auspices and a UN ad hoc intergovernmental committee; the sovereignty mention is about security rules, not internet governance.",
        ),
        (N, N, N, "Background on the EAEU meeting."),
        (N, N, N, "Sub-heading, no position."),
        (
            N,
            N,
            F,
            "Both presidents expect Russia-Kyrgyzstan information-security cooperation to develop: support for a bilateral channel.",
        ),
        (
            N,
            N,
            F,
            "Deepening cooperation under the 2021 Russia-Kyrgyzstan information-security agreement: a bilateral agreement.",
        ),
        (
            N,
            A,
            N,
            "Internationalisation of internet governance, equal rights of all states and a stronger ITU role: state-led governance.",
        ),
        (N, N, N, "Concern about misuse of ICT; no instrument, governance model or bilateral channel."),
        (N, N, N, "Readiness for dialogue with all states: not bilateral, no instrument."),
        (N, N, N, "Publisher boilerplate."),
        (N, N, N, "Photo caption."),
        (N, N, N, "Source line."),
    ],
    "002_4329a9ca99b3442b": [
        (N, N, N, "Site name."),
        (
            N,
            N,
            N,
            "Headline praises a Kuwaiti OEWG initiative on confidence and capacity building: multilateral CBMs, no instrument.",
        ),
        (
            N,
            N,
            N,
            "Praise for a proposal made at the OEWG on confidence and capacity building; multilateral, no treaty or governance position.",
        ),
        (N, N, N, "Context: who spoke and where."),
        (
            F,
            N,
            N,
            "Platform to measure implementation of the UN norms of responsible state behaviour should be built on: support for implementing UN norms.",
        ),
        (
            F,
            N,
            N,
            "Backs initiatives that help developing states apply the existing UN normative framework for state behaviour.",
        ),
        (N, N, N, "Arab League ministerial council: a regional platform, no UN instrument, not bilateral."),
        (
            F,
            N,
            N,
            "Looks forward to the permanent UN mechanism for regular institutional dialogue: a permanent UN mechanism.",
        ),
        (N, N, N, "Threats call for international cooperation and capacity building: generic, no instrument."),
        (
            F,
            N,
            N,
            "Kuwait backs a global portal led by member states under the UN umbrella: a UN mechanism; not an argument about internet governance.",
        ),
        (
            F,
            N,
            N,
            "Norms platform as part of the UN global portal for reporting implementation of the UN normative framework.",
        ),
        (
            N,
            N,
            N,
            "Dialogue at bilateral, regional and multilateral levels on international law: no two specific states, no position on a new instrument.",
        ),
        (N, N, N, "Calls for CBMs and capacity building in general: multilateral, not bilateral."),
        (F, N, N, "Importance of a permanent cybersecurity mechanism under the UN umbrella."),
        (N, N, N, "Comment prompt (boilerplate)."),
        (N, N, N, "Comment form notice (boilerplate)."),
        (N, N, N, "Comment form notice (boilerplate)."),
        (N, N, N, "Back-to-top button (boilerplate)."),
    ],
    "003_9d49735d6995ce8f": [
        (N, N, F, "Russia proposes a treaty with the US on non-interference to restore trust: a bilateral agreement."),
        (N, N, N, "Threat assessment, no measure proposed."),
        (N, N, N, "Responsibility of the main players: no specific instrument or channel."),
        (
            N,
            N,
            F,
            "Proposal to the US of a programme of practical measures to restore bilateral ICT-security relations.",
        ),
        (N, N, N, "List marker."),
        (N, N, F, "Restore regular bilateral inter-agency dialogue with the US."),
        (N, N, N, "List marker."),
        (
            N,
            N,
            F,
            "Keep communication channels between the two states' agencies working (risk-reduction centres, CERTs).",
        ),
        (N, N, N, "List marker."),
        (N, N, F, "Conclude a bilateral intergovernmental agreement on preventing incidents in the information space."),
        (N, N, N, "List marker."),
        (N, N, F, "Exchange of guarantees of non-interference between the two states."),
        (N, N, F, "Calls on the US to allow a Russian-US expert dialogue on cybersecurity."),
        (N, N, F, "These measures aim to build confidence between the two states."),
        (
            N,
            N,
            F,
            "The bilateral agreements would help; the global commitment it also seeks is not placed under the UN, so un_treaty stays none.",
        ),
        (N, N, N, "Source line."),
    ],
}
TARGETS = ("un_treaty", "multistakeholder", "bilateral_cbm")

root = Path(__file__).resolve().parents[1]
lines = []
for doc_id, labels in LABELS.items():
    text = (root / "seeds" / f"{doc_id}.txt").read_text(encoding="utf-8")
    sentences = split_sentences(text)
    assert len(sentences) == len(labels), (doc_id, len(sentences), len(labels))
    for idx, (sentence, label) in enumerate(zip(sentences, labels, strict=True)):
        record = {
            "id": f"{doc_id}-{idx:02d}",
            "doc_id": doc_id,
            "sent_idx": idx,
            "text": sentence.text,
            "start": sentence.start,
            "end": sentence.end,
            "stances": dict(zip(TARGETS, label[:3], strict=True)),
            "source": "seed",
            "annotator": "diplostance-team",
            "rationale": label[3],
        }
        lines.append(json.dumps(record, ensure_ascii=False))
(root / "annotations" / "seeds.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
print(f"wrote {len(lines)} seed records")
