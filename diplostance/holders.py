"""Stance holders: who holds each stance of a sentence.

Two parts:

- **Candidates** (`find_mentions`): the inventory's actors mentioned in a sentence, found through Arabic
  morphology: proclitics (و ف ب ل ك and their combinations وب، ول، فب ...), the article and its
  contraction after ل (للأمم المتحدة), nisba adjectives in every gender and number (الروسي، الروسية،
  السعوديين), and construct states whose head is a minister, ministry, delegation, side or spokesman
  (وزير خارجية روسيا، وزارة الخارجية الصينية، الجانب الروسي): the head is taken into the mention's span
  and noted, since it marks an actor that speaks or acts.
- **The rule model** (`RuleHolderModel`): among the candidates, the holder is the subject of a speech or
  act verb (verb-subject or subject-verb order), a head-marked mention, or the first mention that is not
  governed by a preposition; subjects joined by و are a joint holder; a sentence whose speech verb has
  no subject in it (وأضاف، وأكدت) takes the previous sentence's holder; first-person evaluation in an
  opinion text, or no candidate and no attribution, is the outlet's own voice (`author`); a passive or
  vague attribution is `unknown`. Its parameters are saved as `holders.json` in a model folder, with
  the hash of the inventory they were fitted with.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from diplostance.actors import (
    AUTHOR,
    SPECIAL_HOLDERS,
    UNKNOWN,
    Inventory,
    InventoryError,
    fold,
    fold_with_offsets,
    load_inventory,
)
from diplostance.errors import UserError
from diplostance.outputs import atomic_path, atomic_write_text

HOLDERS_FILE = "holders.json"
HOLDER_KINDS = ("rules", "none")


def _lexicon(words: str) -> frozenset[str]:
    """A word list (spaces and newlines between words) as folded forms."""
    return frozenset(fold(w) for w in words.split())


# Proclitics a word may carry, longest first: conjunctions و ف, prepositions ب ل ك, and their combinations.
PROCLITICS = ("وب", "ول", "وك", "فب", "فل", "فك", "و", "ف", "ب", "ل", "ك", "")
# Head nouns of a construct state or of an apposition that names who speaks for an actor (folded).
HEADS = _lexicon(
    """
    وزير وزيرة وزراء الوزير الوزيرة وزارة الوزارة خارجية الخارجية رئيس الرئيس رئيسة رئاسة الرئاسة حكومة
    الحكومة حكومات الحكومات سفير السفير سفيرة سفارة السفارة مندوب المندوب مندوبة ممثل الممثل ممثلة ممثلو
    ممثلي وفد الوفد وفود الوفود الجانب جانب الطرف طرف المتحدث متحدث المتحدثة الناطق ناطق باسم نائب مساعد
    مستشار المستشار وكالة الوكالة هيئة الهيئة بعثة البعثة دبلوماسي الدبلوماسي دبلوماسيون الدبلوماسيين
    الدبلوماسية مسؤول المسؤول مسؤولون المسؤولين مسؤولة المسؤولة سلطات السلطات السلطة الزعيم زعيم قادة القادة
    زعماء الزعماء الملك ملك الأمير أمير ولي العهد مدير المدير المديرة مجلس المجلس برلمان البرلمان
    الكونغرس الدولة دولة بلاد البلاد مصادر المصادر مصدر المصدر
    """
)
# Adjectives after a UN organ's name that make it another, national body (مجلس الأمن السيبراني، الوطني).
OTHER_BODY = _lexicon("السيبراني السيبرانية الوطني الوطنية القومي القومية الاتحادي الاتحادية الإلكتروني الرقمي")
HEAD_REACH = 4  # words a head chain may reach to the left of a name (نائب وزير خارجية ...)
# Prepositions and particles that govern a following noun: a mention right after one is not a subject.
GOVERNING = _lexicon(
    """
    مع إلى الى على من عن في ضد بين لدى نحو تجاه إزاء ازاء حول بشأن لصالح عبر دون بدون عند حيال مثل بحق
    لـ أمام خلال بواسطة قبل بعد
    """
)
# Speech and act verbs, as folded stems without person prefixes (ي ت ن أ) or suffixes.
SPEECH_VERBS = _lexicon(
    """
    قال قالت يقول تقول أكد أكدت يؤكد تؤكد أعلن أعلنت يعلن تعلن أعرب أعربت يعرب تعرب أشار أشارت يشير تشير
    أوضح أوضحت يوضح توضح أضاف أضافت يضيف تضيف دعا دعت يدعو تدعو ندعو طالب طالبت يطالب تطالب نطالب حذر
    حذرت يحذر تحذر رحب رحبت يرحب ترحب نرحب شدد شددت يشدد تشدد اعتبر اعتبرت يعتبر تعتبر نعتبر رأى رأت يرى
    ترى نرى أرى أيد أيدت يؤيد تؤيد نؤيد دعم دعمت يدعم تدعم ندعم رفض رفضت يرفض ترفض نرفض اقترح اقترحت
    يقترح تقترح نقترح وقع وقعت يوقع توقع عارض عارضت يعارض تعارض انتقد انتقدت ينتقد تنتقد طرح طرحت قدم
    قدمت يقدم تقدم تبنى تبنت يتبنى تتبنى أبدى أبدت يبدي تبدي صرح صرحت يصرح تصرح ذكر ذكرت يذكر تذكر لفت
    لفتت يلفت تلفت نبه نبهت حث حثت يحث تحث جدد جددت يجدد تجدد تمسك تمسكت يتمسك تتمسك أبلغ أبلغت أفاد
    أفادت يفيد تفيد كشف كشفت أصدر أصدرت أقر أقرت يقر تقر اعترض اعترضت يعترض تعترض تعهد تعهدت يتعهد تتعهد
    التزم التزمت شجب شجبت أدان أدانت يدين تدين وافق وافقت يوافق توافق اتفق اتفقت اتفقا يتفق تتفق علق
    علقت يعلق تعلق جمد جمدت انسحب انسحبت أطلق أطلقت يطلق تطلق أبرم أبرمت يبرم تبرم عرض عرضت اختتم اختتمت
    تمسكت ختم ختمت أقام أقامت انضم انضمت ينضم تنضم أشاد أشادت يشيد تشيد ثمن ثمنت يثمن تثمن تطلع تطلعت
    يتطلع تتطلع امتنع امتنعت يمتنع تمتنع صوت صوتت يصوت تصوت وصف وصفت يصف تصف يعرب يريان تريان يعتبران
    يؤيدان تؤيدان أعربا أكدا دعوا دعيا قالوا أكدوا طالبوا رحبوا حذروا انتقدوا رفضوا أعلنوا يواصل تواصل
    واصل واصلت يسعى تسعى سعى سعت يأمل تأمل نأمل تتمنى أبدوا يرحبان يؤكدان يدعوان أجمع أجمعت يجمع عبر
    عبرت يعبر تعبر نوه نوهت
    """
)
VERB_PREFIXES = ("و", "ف", "")
# Words that put the sentence in the outlet's or author's own first-person voice.
FIRST_PERSON = _lexicon("أرى أعتقد أدعو أنصح أظن نرى نعتقد أقول برأيي رأيي أرجح أخشى")
WORD_RE = re.compile(r"\w+")  # Arabic letters and digits; not ، ؛ ؟


@dataclass(frozen=True)
class Mention:
    actor: str
    start: int  # character offsets into the sentence as given (not folded)
    end: int
    text: str
    kind: str  # name | nisba | form
    head: str | None = None  # the head noun when the mention is a construct state or apposition (وزير، الجانب)
    proclitic: str = ""  # the first word's proclitic (و، ب، ول ...)
    word: int = 0  # index of the mention's first word (with its head) in the sentence's words

    def as_dict(self) -> dict:
        return {"actor": self.actor, "start": self.start, "end": self.end, "text": self.text}


@dataclass(frozen=True)
class _Word:
    text: str  # folded
    start: int  # offsets into the folded text
    end: int


def _words(folded: str) -> list[_Word]:
    return [_Word(m.group(), m.start(), m.end()) for m in WORD_RE.finditer(folded)]


def _first_word_variants(word: str) -> list[tuple[str, str]]:
    """(what the word may be without its proclitic, the proclitic): وبالروسية -> بالروسية/و، الروسية/وب, ...;
    after ل the article's alef is dropped (للأمم = ل + الأمم)."""
    found = []
    for clitic in PROCLITICS:
        if not word.startswith(clitic) or len(word) - len(clitic) < 2:
            continue
        rest = word[len(clitic) :]
        found.append((rest, clitic))
        if clitic.endswith("ل") and rest.startswith("ل"):
            found.append(("ا" + rest, clitic))
    return found


class Matcher:
    """Finds the inventory's actors in text; built once per inventory."""

    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        self.index: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}
        for form, actor_id, kind in inventory.surface_forms():
            words = tuple(fold(form).split())
            if words:
                self.index.setdefault(words[0], []).append((words, actor_id, kind))
        for entries in self.index.values():
            entries.sort(key=lambda e: -len(e[0]))

    def _match_at(self, words: list[_Word], i: int):
        best = None
        for first, clitic in _first_word_variants(words[i].text):
            for form, actor_id, kind in self.index.get(first, ()):
                n = len(form)
                if i + n > len(words) or any(words[i + k].text != form[k] for k in range(1, n)):
                    continue
                if best is None or n > best[0]:
                    best = (n, actor_id, kind, clitic)
                break  # entries are longest first
        return best

    def find(self, sentence: str) -> list[Mention]:
        """The actors mentioned in `sentence`, left to right, longest match first, with spans into it."""
        folded, offsets = fold_with_offsets(sentence)
        words = _words(folded)
        found: list[tuple[int, int, str, str, str]] = []  # (first word, words, actor, kind, clitic)
        i = 0
        while i < len(words):
            match = self._match_at(words, i)
            if match is None:
                i += 1
                continue
            n, actor_id, kind, clitic = match
            following = words[i + n].text if i + n < len(words) else ""
            if kind == "name" and following in OTHER_BODY and self.inventory[actor_id].type == "intergovernmental":
                i += n  # مجلس الأمن السيبراني: a national body that only begins like a UN organ's name
                continue
            found.append((i, n, actor_id, kind, clitic))
            i += n
        found = self._merge_genitives(found)
        mentions = []
        taken = 0  # a head may not reach into the previous mention
        for first, n, actor_id, kind, clitic, body in found:
            head_first = self._head_start(words, first, taken)
            head = words[head_first].text if head_first < first else None
            if head is not None:
                head_word = _first_word_variants(head)
                head = next((w for w, _ in head_word if w in HEADS), head)
                clitic = next((c for w, c in head_word if w in HEADS), "")
            elif body is not None:  # the organ of a body (الأمين العام لجامعة الدول العربية)
                head = words[first].text
            start = offsets[words[head_first].start]
            end = offsets[words[first + n - 1].end - 1] + 1
            mentions.append(Mention(actor_id, start, end, sentence[start:end], kind, head, clitic, head_first))
            taken = first + n
        return mentions

    def _head_start(self, words: list[_Word], first: int, taken: int) -> int:
        """The first word of a head chain right before a mention (وزير خارجية روسيا -> وزير)."""
        start = first
        while start - 1 >= taken and first - (start - 1) <= HEAD_REACH:
            if not any(w in HEADS for w, _ in _first_word_variants(words[start - 1].text)):
                break
            start -= 1
        return start

    def _merge_genitives(self, found):
        """A body's name followed at once by ل + another body's name is the second body's organ
        (الأمين العام لجامعة الدول العربية is the Arab League's, not the UN Secretary-General's): one
        mention of the second body, its head the first. Entries gain that head's actor (or None)."""
        merged, skip = [], False
        for k, (first, n, actor_id, kind, clitic) in enumerate(found):
            if skip:
                skip = False
                continue
            nxt = found[k + 1] if k + 1 < len(found) else None
            if (  # مجلس الأمن الروسي: a state's own body, named like an international one, is the state's
                nxt is not None
                and nxt[0] == first + n
                and nxt[3] == "nisba"
                and not nxt[4]
                and self.inventory[actor_id].type == "intergovernmental"
                and self.inventory[nxt[2]].type == "state"
            ):
                merged.append((first, n + nxt[1], nxt[2], nxt[3], clitic, actor_id))
                skip = True
                continue
            if (
                nxt is not None
                and nxt[0] == first + n
                and nxt[4].endswith("ل")
                and self.inventory[actor_id].type == "intergovernmental"
                and self.inventory[nxt[2]].type == "intergovernmental"
            ):
                merged.append((first, n + nxt[1], nxt[2], nxt[3], clitic, actor_id))
                skip = True
                continue
            merged.append((first, n, actor_id, kind, clitic, None))
        return merged


def find_mentions(sentence: str, inventory: Inventory) -> list[Mention]:
    """The inventory's actors in `sentence` (a Matcher per call: build one `Matcher` for many sentences)."""
    return Matcher(inventory).find(sentence)


# ---------------------------------------------------------------------------- the rule model

# Act verbs beside the speech verbs: what an actor does that carries a stance (a draft, a signature, a vote).
ACT_VERBS = _lexicon(
    """
    تقدم تقدمت تقدما تقدمتا قدمتا قدما يفتح تفتح فتح فتحت اعتمد اعتمدت يعتمد تعتمد أقر نظم نظمت استضاف
    استضافت يستضيف تستضيف شارك شاركت يشارك تشارك أوقف أوقفت يوقف توقف جمد جمدت أنهى أنهت ألغى ألغت قطع
    قطعت أسس أسست أنشأ أنشأت صادق صادقت يصادق تصادق انخرط انخرطت دافع دافعت يدافع تدافع ركز ركزت كان
    كانت كانا كانتا توصل توصلت توصلا توصلتا توصلوا
    """
)
# Agreement and signature verbs: the party after مع signs or agrees too (وقعت السعودية مع عمان).
AGREEMENT_VERBS = _lexicon(
    """
    وقع وقعت وقعا وقعتا يوقع توقع يوقعان توقعان أبرم أبرمت أبرما أبرمتا اتفق اتفقت اتفقا اتفقتا يتفق
    تتفق
    """
)
OBJECT_SUFFIXES = ("هما", "ها", "هم", "ه")  # قدمته، تقدمت به
# Nouns that take up the previous speaker (وأكدت الوزارة، وأوضح البيان، وقال المسؤول) rather than name one.
ANAPHORS = _lexicon(
    """
    الوزارة البيان المتحدث المتحدثة المسؤول المندوب الوفد الحكومة المملكة الدولة السلطنة البلاد الرسالة
    المذكرة الإطار التعليق الوثيقة المنظمة المكتب الهيئة المركز الوكالة الرئيس الرئاسة الزعيم التحالف
    الائتلاف المنتدى اللجنة الفريق المنظمات
    """
)
PAIR_ANAPHORS = _lexicon(
    """
    الجانبان الجانبين الطرفان الطرفين البلدان البلدين الرئيسان الزعيمان رئيسي رئيسا
    """
)
# Collective nouns before من: منظمات من المجتمع المدني، مجموعة من منظمات الحقوق الرقمية (من does not govern)
COLLECTIVES = _lexicon("منظمات مجموعة مجموعات عدد ائتلاف تحالف وفود ممثلو ممثلي بعض عدة")
WEAK_GOVERNING = _lexicon("في لدى ب ل")  # مسؤول في الخارجية الروسية: still the subject
SUBJECT_BREAKS = re.compile(r"[:«\"“]|(^|\s)(ان|إن|أن|بان|بأن)(\s|$)")  # the subject region ends at a quote or أن
FIRST_PERSON_PLURAL_VERB = re.compile(r"^(و|ف)?ن\w{2,}$")  # نؤكد، ونرحب، نعتبر
VAGUE_MARKERS = _lexicon("مصادر مصدر تقارير بعض عدد عدة آخرون أخرى")
DATELINE_RE = re.compile(r"^[^.!?؟]{0,80}(\(\s*[^)]{1,20}\)\s*[:-]|\s[-–]\s)")  # موسكو - (وكالات): / دبي - ...


@dataclass
class RuleParameters:
    """What the rule model's choices depend on (saved in holders.json; `fit` may change them)."""

    verb_reach: int = 3  # words between a speech or act verb and its subject (وقال المتحدث باسم ...)
    far_reach: int = 8  # a subject behind في/ل after the verb (قال مسؤول في وزارة الخارجية الأمريكية)
    preverbal_reach: int = 3  # words between a subject and the verb after it (روسيا تؤيد، الصين بدورها تدعو)
    join_gap: int = 3  # words between two subjects joined by و (الرئيس الروسي فلاديمير بوتين والرئيس ...)
    carry: bool = True  # a speech verb without a subject takes the previous speaker of the document
    agreement_partner: bool = True  # وقع X مع Y: Y is a holder too
    head_weight: float = 1.0
    verb_weight: float = 3.0
    far_weight: float = 2.0
    preverbal_weight: float = 2.0
    initial_weight: float = 1.5  # a sentence that opens with the actor (a headline, a nominal sentence)
    first_weight: float = 0.5
    governed_weight: float = -3.0
    bare_nisba_weight: float = -1.0
    content_weight: float = -2.5  # a mention inside what an elided or anaphoric speaker says (وأضاف أن روسيا ...)
    min_score: float = 1.5  # a candidate below this is no holder
    no_attribution: str = AUTHOR  # a sentence with no candidate, no speech verb and no anaphor


@dataclass
class HolderChoice:
    """A sentence's holders: actor ids (or author/unknown) and the mentions they were found in."""

    ids: list[str]
    mentions: list[Mention] = field(default_factory=list)
    rule: str = ""  # which rule chose them (subject, carry, agreement, author, unknown, ...)


def _is_verb(word: str, lexicon: frozenset) -> bool:
    for prefix in VERB_PREFIXES:
        if not word.startswith(prefix):
            continue
        stem = word[len(prefix) :]
        if stem in lexicon or any(stem.endswith(s) and stem[: -len(s)] in lexicon for s in OBJECT_SUFFIXES):
            return True
    return False


def _strip(word: str) -> set[str]:
    return {w for w, _ in _first_word_variants(word)}


@dataclass
class _Sentence:
    """A sentence's folded words with their offsets in the original, and the candidates among them."""

    text: str
    words: list[str]
    starts: list[int]  # offsets of the words in `text`
    verbs: list[int]
    mentions: list[Mention]
    spans: list[tuple[int, int]]  # each mention's first and last+1 word

    @classmethod
    def read(cls, text: str, matcher: Matcher) -> _Sentence:
        folded, offsets = fold_with_offsets(text)
        found = _words(folded)
        words = [w.text for w in found]
        starts = [offsets[w.start] for w in found]
        verbs = [i for i, w in enumerate(words) if _is_verb(w, SPEECH_VERBS) or _is_verb(w, ACT_VERBS)]
        mentions = matcher.find(text)
        spans = [(sum(1 for s in starts if s < m.start), sum(1 for s in starts if s < m.end)) for m in mentions]
        return cls(text, words, starts, verbs, mentions, spans)

    def between(self, w0: int, w1: int) -> str:
        """The original text from word w0 up to word w1."""
        start = self.starts[w0] if w0 < len(self.starts) else len(self.text)
        end = self.starts[w1] if w1 < len(self.starts) else len(self.text)
        return self.text[start:end]


class RuleHolderModel:
    """Chooses each sentence's holders among the matcher's candidates (see the module's docstring)."""

    kind = "rules"

    def __init__(self, inventory: Inventory, params: RuleParameters | None = None):
        self.inventory = inventory
        self.params = params or RuleParameters()
        self.matcher = Matcher(inventory)

    # -- one sentence

    def _governor(self, s: _Sentence, w0: int, mention: Mention) -> str | None:
        """The preposition governing the mention (a separate word or the proclitic), None when it is free."""
        previous = s.words[w0 - 1] if w0 > 0 else ""
        before = s.words[w0 - 2] if w0 > 1 else ""
        if previous == "من" and before in COLLECTIVES:
            return None
        if previous in GOVERNING:
            return previous
        if mention.proclitic[-1:] in ("ب", "ل", "ك"):
            return mention.proclitic[-1]
        return None

    def _scores(self, s: _Sentence) -> list[float]:
        p = self.params
        dateline = DATELINE_RE.match(s.text)
        skip = sum(1 for st in s.starts if st < dateline.end()) if dateline else 0
        scores, first_free = [], True
        content = self._content_start(s, skip)
        for mention, (w0, w1) in zip(s.mentions, s.spans, strict=True):
            if w1 <= skip:
                scores.append(float("-inf"))  # the dateline's place name
                continue
            governor = self._governor(s, w0, mention)
            score = 0.0
            after = [v for v in s.verbs if v < w0 and not SUBJECT_BREAKS.search(s.between(v + 1, w0))]
            nearest = w0 - max(after) - 1 if after else None
            if nearest is not None and nearest <= p.verb_reach and governor is None:
                score += p.verb_weight
            elif nearest is not None and nearest <= p.far_reach and governor in WEAK_GOVERNING:
                score += p.far_weight
            elif governor is None and any(0 <= v - w1 <= p.preverbal_reach for v in s.verbs):
                score += p.preverbal_weight
            if governor is None and w0 <= skip + 1:
                score += p.initial_weight
            if mention.head is not None:
                score += p.head_weight
            if governor is not None and not (
                nearest is not None and nearest <= p.far_reach and governor in WEAK_GOVERNING
            ):
                score += p.governed_weight
            elif first_free:
                score += p.first_weight
                first_free = False
            if mention.kind == "nisba" and mention.head is None:
                score += p.bare_nisba_weight
            if content is not None and w0 >= content:
                score += p.content_weight
            scores.append(score)
        return scores

    def _content_start(self, s: _Sentence, skip: int) -> int | None:
        """Where the reported content begins when the sentence opens with a speaker that is no candidate: a
        speech verb with an elided subject (وأضاف أن ...), an anaphor (وأكدت الوزارة أن ...) or a label
        (المتحدث: ...); None otherwise."""
        opening = s.words[skip : skip + 4]
        verb_first = bool(s.verbs) and s.verbs[0] <= skip + 1 and _is_verb(s.words[s.verbs[0]], SPEECH_VERBS)
        anaphor = any(_strip(w) & ANAPHORS for w in opening)
        if not (verb_first or anaphor):
            return None
        for w in range(skip + 1, min(len(s.words), skip + 9)):
            if SUBJECT_BREAKS.search(s.between(skip, w)):
                break_at = w - 1
                if not any(skip <= w0 < break_at for w0, _ in s.spans):
                    return break_at
                return None
        return None

    def choose(
        self,
        sentence: str,
        speaker: HolderChoice | None = None,
        pair: HolderChoice | None = None,
        interview: bool = False,
    ) -> HolderChoice:
        """The holders of `sentence`; `speaker` is the document's previous speaker (for elided subjects),
        `pair` its last joint holder (for الجانبان، البلدان); in an interview the first person is the guest."""
        p = self.params
        s = _Sentence.read(sentence, self.matcher)
        head_words = [_strip(w) for w in s.words[:5]]
        if pair is not None and p.carry and any(w & PAIR_ANAPHORS for w in head_words):
            return HolderChoice(list(pair.ids), list(pair.mentions), "pair")
        scores = self._scores(s)
        if scores and max(scores) >= p.min_score:
            k = max(range(len(scores)), key=lambda i: (scores[i], -i))
            chosen = [k]
            for j in range(k + 1, len(s.mentions)):  # subjects joined by و: X وY
                nxt, gap = s.mentions[j], s.spans[j][0] - s.spans[chosen[-1]][1]
                if nxt.proclitic.startswith("و") and 0 <= gap <= p.join_gap and nxt.proclitic[1:2] not in ("ب", "ل"):
                    chosen.append(j)
                else:
                    break
            mentions = [s.mentions[j] for j in chosen]
            rule = "subject"
            if p.agreement_partner and any(_is_verb(s.words[v], AGREEMENT_VERBS) for v in s.verbs):
                partner = self._agreement_partner(s, mentions)
                if partner is not None:
                    mentions.append(partner)
                    rule = "agreement"
            return HolderChoice(list(dict.fromkeys(m.actor for m in mentions)), mentions, rule)
        # no candidate stands out: an elided or anaphoric subject, the author, or no one
        answer = bool(s.words) and s.words[0] == "جواب"
        if (answer or interview) and speaker is not None and p.carry:
            return HolderChoice(list(speaker.ids), list(speaker.mentions), "carry")
        if any(_strip(w) & FIRST_PERSON for w in s.words):
            return HolderChoice([AUTHOR], [], "first_person")
        starts_with_verb = bool(s.verbs) and s.verbs[0] <= 1
        anaphor = any(w & ANAPHORS for w in head_words)
        we = any(
            FIRST_PERSON_PLURAL_VERB.match(w) and _is_verb("ي" + w.lstrip("وف")[1:], SPEECH_VERBS) for w in s.words
        )
        if p.carry and speaker is not None and (starts_with_verb or anaphor or we):
            return HolderChoice(list(speaker.ids), list(speaker.mentions), "carry")
        if any(w in VAGUE_MARKERS for w in s.words[:6]) or s.verbs:
            return HolderChoice([UNKNOWN], [], "unknown")
        return HolderChoice([p.no_attribution], [], "no_attribution")

    @staticmethod
    def _agreement_partner(s: _Sentence, chosen: list[Mention]) -> Mention | None:
        """The first mention within a few words after مع (وقعت الهيئة ... مذكرة تفاهم مع نظيرتها في كوريا)."""
        taken = {m.actor for m in chosen}
        for i, word in enumerate(s.words):
            if word not in ("مع", "ومع"):
                continue
            for mention, (w0, _) in zip(s.mentions, s.spans, strict=True):
                if i < w0 <= i + 5 and mention.actor not in taken:
                    return mention
        return None

    # -- a document

    def predict_document(self, sentences: list[str]) -> list[HolderChoice]:
        """Each sentence's holders, in order; a sentence's choice may take up the previous speaker."""
        out, speaker, pair, interview = [], None, None, False
        for sentence in sentences:
            opening = fold(sentence)[:6]
            question = opening.startswith("سوال")
            interview = interview or question or opening.startswith("جواب")
            choice = self.choose(sentence, speaker, pair, interview and not question)
            out.append(choice)
            if question:
                continue  # the interviewer's question names others' views: the guest stays the speaker
            if choice.rule in ("subject", "agreement", "carry", "pair") and choice.ids:
                speaker = choice
                if len(choice.ids) >= 2:
                    pair = choice
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "parameters": asdict(self.params), "inventory_sha256": self.inventory.digest}


# ---------------------------------------------------------------------------- saved with a model

HOLDER_ACTORS_FILE = "holder_actors.yaml"  # the inventory the holder model was fitted with, copied beside it


class HolderModelError(UserError):
    """A holder config, or a model folder's holders.json (or its inventory), that cannot be used: one line."""

    exit_code = 2


def save_holder_model(model: RuleHolderModel, folder: str | Path, facts: dict | None = None) -> Path:
    """holders.json (kind, parameters, the inventory's SHA-256, how it was fitted) and a copy of the
    inventory, so that the folder labels holders wherever it goes; both written atomically."""
    folder = Path(folder)
    if model.inventory.path is None:
        raise HolderModelError("the holder model's inventory has no file to copy")
    with atomic_path(folder / HOLDER_ACTORS_FILE) as temporary:
        temporary.write_bytes(Path(model.inventory.path).read_bytes())
    content = {**model.to_dict(), "fit": facts or {}}
    return atomic_write_text(folder / HOLDERS_FILE, json.dumps(content, indent=2, ensure_ascii=False) + "\n")


def load_holder_model(folder: str | Path) -> RuleHolderModel | None:
    """The folder's holder model, or None when it has none (trained with holders=none, or before holders)."""
    folder = Path(folder)
    path = folder / HOLDERS_FILE
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HolderModelError(f"{path}: not readable as JSON ({error})") from error
    if not isinstance(content, dict) or content.get("kind") not in ("rules",):
        raise HolderModelError(
            f"{path}: kind must be 'rules', got {content.get('kind') if isinstance(content, dict) else content!r}"
        )
    try:
        inventory = load_inventory(folder / HOLDER_ACTORS_FILE)
    except (InventoryError, OSError) as error:
        raise HolderModelError(f"{folder / HOLDER_ACTORS_FILE}: the holder model's inventory: {error}") from error
    if inventory.digest != content.get("inventory_sha256"):
        raise HolderModelError(
            f"{folder / HOLDER_ACTORS_FILE}: its SHA-256 is not the one {HOLDERS_FILE} was fitted with; refit the "
            "holders (train.py) or restore the file"
        )
    known = {f.name for f in fields(RuleParameters)}
    parameters = content.get("parameters") or {}
    if not isinstance(parameters, dict) or set(parameters) - known:
        raise HolderModelError(
            f"{path}: unknown parameter(s) {sorted(set(parameters) - known)}; known: {sorted(known)}"
        )
    return RuleHolderModel(inventory, RuleParameters(**parameters))


# ---------------------------------------------------------------------------- gold documents, fitting, scoring


@dataclass
class GoldDocument:
    """A document's sentences in order, their ids and slices, and the gold holders of those that have them."""

    doc_id: str
    ids: list[str]
    texts: list[str]
    slices: list[str]
    holders: dict[str, dict[str, list[str]]]  # sentence id -> target -> holder ids


def gold_documents(rows, holders: dict[str, dict]) -> list[GoldDocument]:
    """Group a split's rows (dicts with id, doc_id, text and slice, in document order) into documents."""
    docs: dict[str, GoldDocument] = {}
    for row in rows:
        doc = docs.setdefault(row["doc_id"], GoldDocument(row["doc_id"], [], [], [], {}))
        doc.ids.append(row["id"])
        doc.texts.append(row["text"])
        doc.slices.append(row.get("slice") or row.get("source") or "")
        if row["id"] in holders:
            doc.holders[row["id"]] = holders[row["id"]]
    return list(docs.values())


def _pairs(model: RuleHolderModel, docs: list[GoldDocument]) -> list[dict]:
    """One entry per (sentence, target) with gold holders: gold, predicted and what they say."""
    out = []
    for doc in docs:
        if not doc.holders:
            continue
        choices = model.predict_document(doc.texts)
        for sid, text, slice_name, choice in zip(doc.ids, doc.texts, doc.slices, choices, strict=True):
            for target, gold in doc.holders.get(sid, {}).items():
                found = {m.actor for m in model.matcher.find(text)}
                out.append(
                    {
                        "id": sid,
                        "target": target,
                        "slice": slice_name,
                        "gold": sorted(gold),
                        "pred": sorted(choice.ids),
                        "rule": choice.rule,
                        "candidates": found,
                    }
                )
    return out


def accuracy(model: RuleHolderModel, docs: list[GoldDocument]) -> tuple[float | None, int]:
    pairs = _pairs(model, docs)
    return (sum(p["gold"] == p["pred"] for p in pairs) / len(pairs) if pairs else None), len(pairs)


def fit_holder_model(cfg, docs: list[GoldDocument]) -> tuple[RuleHolderModel | None, dict]:
    """The configured holder model (configs/holders/*.yaml), and what fitting it did.

    kind `none`: no model. kind `rules`: the configured parameters; when the training documents (train
    and dev) hold gold holders for at least `fit.min_pairs` stance-bearing (sentence, target) pairs, each
    combination of the `fit.grid` values is scored on them and the most accurate is kept (ties: the
    configured values first)."""
    cfg = dict(cfg or {})
    kind = cfg.get("kind", "rules")
    if kind == "none":
        return None, {"kind": "none"}
    if kind not in HOLDER_KINDS:
        raise HolderModelError(f"holders.kind must be one of {list(HOLDER_KINDS)}, got {kind!r}")
    from hydra.utils import to_absolute_path  # relative to where the command was started, also under Hydra

    path = Path(to_absolute_path(str(cfg.get("inventory") or "annotations/actors.yaml")))
    inventory = load_inventory(path)
    base = dict(cfg.get("parameters") or {})
    known = {f.name for f in fields(RuleParameters)}
    if unknown := sorted(set(base) - known):
        raise HolderModelError(f"holders.parameters: unknown key(s) {unknown}; known: {sorted(known)}")
    fit = dict(cfg.get("fit") or {})
    grid = {k: list(v) for k, v in (fit.get("grid") or {}).items()}
    if unknown := sorted(set(grid) - known):
        raise HolderModelError(f"holders.fit.grid: unknown key(s) {unknown}; known: {sorted(known)}")
    model = RuleHolderModel(inventory, RuleParameters(**base))
    score, n = accuracy(model, docs)
    facts = {"kind": kind, "inventory": str(path), "training_pairs": n, "configured_accuracy": score}
    if n < int(fit.get("min_pairs", 50)) or not grid:
        facts["fitted"] = False
        facts["note"] = (
            f"parameters as configured: {n} gold pair(s) in train/dev (fit.min_pairs {fit.get('min_pairs', 50)})"
        )
        return model, facts
    best = (score if score is not None else -1.0, model)
    trials = []
    for values in itertools.product(*grid.values()):
        params = RuleParameters(**{**base, **dict(zip(grid, values, strict=True))})
        candidate = RuleHolderModel(inventory, params)
        candidate_score, _ = accuracy(candidate, docs)
        trials.append({**dict(zip(grid, values, strict=True)), "accuracy": candidate_score})
        if candidate_score is not None and candidate_score > best[0] + 1e-12:
            best = (candidate_score, candidate)
    facts.update(fitted=True, accuracy=best[0], grid=trials, parameters=asdict(best[1].params))
    return best[1], facts


def _interval(values: np.ndarray, n_resamples: int, seed: int, confidence: float = 0.95) -> list[float] | None:
    if len(values) == 0 or n_resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_resamples, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def holder_metrics(model: RuleHolderModel, docs: list[GoldDocument], n_resamples: int = 1000, seed: int = 0) -> dict:
    """Accuracy (exact set of holders) on the stance-bearing (sentence, target) pairs with gold holders,
    with a 95% bootstrap interval; per slice, per actor type of the gold holder (`joint` when it names
    several actors); precision and recall of `author` and `unknown`; and the share of gold actors the
    candidates found (the matcher's recall, which bounds the choice)."""
    pairs = _pairs(model, docs)
    if not pairs:
        return {"pairs": 0}
    correct = np.array([p["gold"] == p["pred"] for p in pairs], dtype=float)

    def block(selected: list[int]) -> dict:
        values = correct[selected]
        return {
            "pairs": len(selected),
            "accuracy": float(values.mean()) if len(selected) else None,
            "interval": _interval(values, n_resamples, seed),
        }

    def gold_type(p: dict) -> str:
        if len(p["gold"]) > 1:
            return "joint"
        holder = p["gold"][0]
        return (
            holder if holder in SPECIAL_HOLDERS else model.inventory[holder].type if holder in model.inventory else "?"
        )

    metrics = {"pairs": len(pairs), "sentences": len({p["id"] for p in pairs}), **block(list(range(len(pairs))))}
    metrics["slices"] = {
        name: block([i for i, p in enumerate(pairs) if p["slice"] == name])
        for name in sorted({p["slice"] for p in pairs})
    }
    metrics["types"] = {
        name: block([i for i, p in enumerate(pairs) if gold_type(p) == name])
        for name in sorted({gold_type(p) for p in pairs})
    }
    for special in SPECIAL_HOLDERS:
        predicted = [p for p in pairs if p["pred"] == [special]]
        gold = [p for p in pairs if p["gold"] == [special]]
        hits = sum(p["gold"] == [special] for p in predicted)
        metrics[special] = {
            "precision": _rate(hits, len(predicted)),
            "recall": _rate(hits, len(gold)),
            "predicted": len(predicted),
            "gold": len(gold),
        }
    actors = [(a, p["candidates"]) for p in pairs for a in p["gold"] if a not in SPECIAL_HOLDERS]
    metrics["candidate_recall"] = _rate(sum(a in found for a, found in actors), len(actors))
    metrics["rules"] = {
        rule: {
            "pairs": sum(p["rule"] == rule for p in pairs),
            "accuracy": _rate(
                sum(p["rule"] == rule and p["gold"] == p["pred"] for p in pairs), sum(p["rule"] == rule for p in pairs)
            ),
        }
        for rule in sorted({p["rule"] for p in pairs})
    }
    metrics["confidence"], metrics["n_resamples"] = 0.95, n_resamples
    return metrics


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def _cell(block: dict) -> str:
    interval = block.get("interval")
    ci = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
    return f"{_fmt(block.get('accuracy'))}{ci}"


def holder_report_lines(metrics: dict) -> list[str]:
    """report.md's stance-holder section (empty when no gold holders were scored)."""
    if not metrics or not metrics.get("pairs"):
        return []
    lines = [
        "",
        "## Stance holders",
        "",
        f"Holder model `{metrics.get('kind', 'rules')}` on gold stances: {metrics['pairs']} stance-bearing "
        f"(sentence, target) pairs with gold holders in {metrics['sentences']} sentences; accuracy is the exact "
        "set of holders, with 95% bootstrap intervals.",
        "",
        "| scope | pairs | accuracy [95% CI] |",
        "|---|---|---|",
        f"| all | {metrics['pairs']} | {_cell(metrics)} |",
    ]
    lines += [f"| slice `{name}` | {b['pairs']} | {_cell(b)} |" for name, b in metrics["slices"].items()]
    lines += [f"| holder type `{name}` | {b['pairs']} | {_cell(b)} |" for name, b in metrics["types"].items()]
    lines += ["", "| holder | precision | recall | predicted | gold |", "|---|---|---|---|---|"]
    lines += [
        f"| `{s}` | {_fmt(metrics[s]['precision'])} | {_fmt(metrics[s]['recall'])} | {metrics[s]['predicted']} | "
        f"{metrics[s]['gold']} |"
        for s in SPECIAL_HOLDERS
    ]
    lines += ["", f"The candidates held {_fmt(metrics.get('candidate_recall'))} of the gold actors."]
    return lines


def evaluate_holder_folder(model_dir, rows, holders: dict, n_resamples: int = 1000, seed: int = 0) -> dict | None:
    """Holder metrics of the folder's holder model on the rows' gold holders; None when either is missing."""
    model = load_holder_model(model_dir)
    if model is None or not holders:
        return None
    docs = gold_documents(rows, holders)
    return {"kind": model.kind, **holder_metrics(model, docs, n_resamples, seed)}


# ---------------------------------------------------------------------------- labelling


def describe_holders(model: RuleHolderModel, choice: HolderChoice, offset_of) -> list[dict]:
    """What a labelled record says of a choice: each holder's id, names and type, the mentions it was
    found in (character offsets into the article: `offset_of(mention)`), and the rule."""
    out = []
    for holder in choice.ids:
        entry = model.inventory.describe(holder)
        entry["mentions"] = [
            {"start": start, "end": end, "text": m.text}
            for m in choice.mentions
            if m.actor == holder
            for start, end in [offset_of(m)]
        ]
        entry["rule"] = choice.rule
        out.append(entry)
    return out


def label_document(
    model: RuleHolderModel, sentences, stances: list[dict[str, str]], neutral: str = "none"
) -> list[dict]:
    """For each sentence (objects with .text and .start into the article): {target: holders} for each
    target whose predicted stance is not `neutral`. Holders found in an earlier sentence (an elided
    subject) point at that sentence's mention."""
    texts = [s.text for s in sentences]
    choices = model.predict_document(texts)
    where = {}  # id(mention) -> the article offset of its sentence
    for sentence, choice in zip(sentences, choices, strict=True):
        for mention in choice.mentions:
            where.setdefault(id(mention), sentence.start)
    out = []
    for choice, sentence_stances in zip(choices, stances, strict=True):
        sided = [t for t, p in sentence_stances.items() if p != neutral]
        if not sided:
            out.append({})
            continue
        described = describe_holders(model, choice, lambda m: (where[id(m)] + m.start, where[id(m)] + m.end))
        out.append({t: described for t in sided})
    return out


# ---------------------------------------------------------------------------- a training run


def fit_for_run(cfg, data) -> tuple[RuleHolderModel | None, dict]:
    """The run's holder model, fitted on the train and dev splits' gold holders (`data.holders`); with no
    inventory file the run goes on without one (a warning in the report)."""
    if cfg is None or dict(cfg).get("kind", "rules") == "none":
        return None, {"kind": "none"}
    from hydra.utils import to_absolute_path

    inventory = Path(to_absolute_path(str(dict(cfg).get("inventory") or "annotations/actors.yaml")))
    if not inventory.is_file():
        data.warnings.append(f"holders: no actor inventory at {inventory}; no stance-holder model was saved")
        return None, {"kind": "none", "note": f"no inventory at {inventory}"}
    rows = [row for name in ("train", "dev") if name in data.splits for row in data.splits[name]]
    return fit_holder_model(cfg, gold_documents(rows, getattr(data, "holders", {}) or {}))


def save_holders(model: RuleHolderModel | None, folder: str | Path, facts: dict) -> None:
    """holders.json beside a model the run saved (nothing when the run has no holder model)."""
    if model is not None:
        save_holder_model(model, folder, facts)
