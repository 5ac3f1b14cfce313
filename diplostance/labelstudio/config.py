"""The Label Studio labelling config (XML), generated from the label schema; nothing is written by hand.

The sentence is shown right-to-left between the sentences before and after it in its
article; each target gets one required single-choice control with the schema's
polarities, its English and Arabic names, and its definitions as hints.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from diplostance.schema import LabelSpace

SENTENCE = "sentence"  # the Text control the choices point at (data field `text`)
CONTEXT_BEFORE, CONTEXT_AFTER = "context_before", "context_after"
RTL = "direction: rtl; text-align: right; font-size: 1.1em;"
CONTEXT_STYLE = "direction: rtl; text-align: right; color: #666; font-size: 0.95em;"


def _hint(labels: LabelSpace, target: str, polarity: str) -> str:
    description = labels.descriptions.get(target)
    return " ".join(str(getattr(description, polarity, "") or "").split()) if description else ""


def labelling_config(labels: LabelSpace) -> str:
    """The `<View>` config: one `Choices` control named after each target, one `Choice` per polarity."""
    view = ET.Element("View")
    ET.SubElement(view, "Header", value=f"Label schema {labels.version}".strip(), size="6")
    text_view = ET.SubElement(view, "View", style="padding: 0.5em; border: 1px solid #ddd; border-radius: 4px;")
    ET.SubElement(
        ET.SubElement(text_view, "View", style=CONTEXT_STYLE), "Text", name=CONTEXT_BEFORE, value="$context_before"
    )
    ET.SubElement(
        ET.SubElement(text_view, "View", style=RTL + " font-weight: bold; margin: 0.4em 0;"),
        "Text",
        name=SENTENCE,
        value="$text",
    )
    ET.SubElement(
        ET.SubElement(text_view, "View", style=CONTEXT_STYLE), "Text", name=CONTEXT_AFTER, value="$context_after"
    )
    for target in labels.targets:
        description = labels.descriptions.get(target)
        names = [n for n in (description.name_en, description.name_ar) if n] if description else []
        ET.SubElement(view, "Header", value=f"{target}: {' / '.join(names)}" if names else target, size="5")
        choices = ET.SubElement(
            view,
            "Choices",
            name=target,
            toName=SENTENCE,
            choice="single",
            required="true",
            showInline="true",
        )
        for polarity in labels.polarities:
            hint = _hint(labels, target, polarity)
            ET.SubElement(choices, "Choice", value=polarity, **({"hint": hint} if hint else {}))
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"
