"""Built-in text corpus for training the tiny model's byte-level BPE tokenizer offline.

The corpus is generated from templates so that English pose language ("the left elbow is bent",
"the torso leans forward"), the chat/prompt phrasing used by the recipes, action labels and some
generic English all tokenise into few tokens. It uses its own fixed random stream (not the model
seed): every tiny model therefore shares one vocabulary, and only the weights depend on the seed.
"""

from __future__ import annotations

import random

_SIDES = ("left", "right")
_LIMBS = ("arm", "leg", "hand", "foot", "knee", "elbow", "shoulder", "hip", "wrist", "ankle")
_BODY = ("head", "neck", "torso", "back", "chest", "spine", "pelvis", "upper body", "body")
_BENDS = ("slightly bent", "bent", "fully bent", "straight", "extended", "stretched out",
          "bent at a right angle", "relaxed", "raised", "lowered", "crossed", "lifted")
_DIRECTIONS = ("forward", "backward", "to the left", "to the right", "up", "down", "sideways",
               "towards the camera", "away from the camera", "above the head", "behind the back",
               "in front of the body", "next to the hip", "at shoulder height")
_ACTIONS = ("standing", "sitting", "walking", "running", "jumping", "kneeling", "crouching",
            "squatting", "lying down", "bending over", "stretching", "dancing", "waving",
            "throwing a ball", "kicking", "climbing", "lunging", "balancing on one leg",
            "doing a push-up", "reaching up", "picking something up", "clapping", "boxing")
_LABELS = ("drink water", "eat meal", "brush teeth", "pick up", "throw", "sit down", "stand up",
           "clapping", "reading", "writing", "hand waving", "kicking something", "jump up",
           "hopping", "phone call", "cross hands in front", "salute", "put on a hat", "falling",
           "walking towards each other", "touch head", "nod head", "point to something")
_NUMBERS = tuple(str(n) for n in range(0, 100)) + ("ninety", "forty-five", "thirty", "sixty")
_GENERIC = (
    "The quick brown fox jumps over the lazy dog.",
    "A model reads the question, thinks step by step and then answers.",
    "Please describe what you see in the picture in one or two sentences.",
    "The answer is yes.", "The answer is no.", "Yes.", "No.",
    "First, look at the position of the arms. Then, look at the legs.",
    "The image shows a person in a room with a white wall and a wooden floor.",
    "This is a skeleton sequence rendered as a series of frames.",
    "Each frame shows the joints as coloured blobs connected by bones.",
    "Think about how the motion changes over time before giving the label.",
    "In summary, the person performs the action slowly and carefully.",
)
# Common English words for generic sentences, so ordinary text also tokenises compactly.
_WORDS = tuple("""
time year people way day man woman child world life hand part place case week company system
program question work government number night point home water room mother area money story
fact month lot right study book eye job word business issue side kind head house service friend
father power hour game line end member law car city community name president team minute idea
kid body information school face others level office door health person art war history party
result change morning reason research girl guy moment air teacher force education foot boy age
policy music market sense nation plan college interest death experience effect class control
care field development role effort rate heart drug show leader light voice wife police mind price
report decision son view relationship town road arm difference value building action model season
society tax director position player record paper space ground form event official matter center
couple site project activity star table need court american oil situation cost industry figure
street image phone data picture practice piece land product doctor wall patient worker news test
movie north love support technology step baby computer type attention film tree source organization
hair window evidence population truth song energy bed chair floor ball shape color camera frame
be have do say get make go know take see come think look want give use find tell ask seem feel
try leave call keep let begin help talk turn start hold bring happen write provide sit stand lose
pay meet include continue set learn lead understand watch follow stop create speak read allow add
spend grow open walk win offer remember consider appear buy wait serve die send expect build stay
fall cut reach kill remain suggest raise pass sell require decide pull carry break rotate bend lift
good new first last long great little own other old big high different small large next early young
important few public bad same able late hard major better economic strong possible whole free
military true federal international full special easy clear recent certain personal open red blue
green yellow black white difficult available likely short single medical current wrong private past
foreign fine common poor natural significant similar hot dead central happy serious ready simple
left physical general environmental financial low slow quick upper lower inner outer front rear
very also often however too usually really early never always sometimes together likely simply
generally instead actually already enough ever finally probably quickly slowly nearly almost
""".split())

_PROMPTS = (
    "Describe the pose of the person in the image.",
    "What is the body pose of the person? Answer with the pose token.",
    "Estimate the 3D pose of the person shown in the image.",
    "Generate the human pose described by the following text:",
    "Here is the pose you asked for:",
    "The pose is",
    "Which action is shown in these frames?",
    "Is the action '{label}'? Answer YES or NO.",
    "Explain step by step which action the skeleton performs, then give the label.",
    "Label: {label}",
    "Reasoning: the {side} {limb} moves {direction}, so the action is {label}.",
)


def _limb(rng: random.Random) -> str:
    return f"{rng.choice(_SIDES)} {rng.choice(_LIMBS)}"


def _pose_sentence(rng: random.Random) -> str:
    pattern = rng.randrange(8)
    if pattern == 0:
        return f"The person is {rng.choice(_ACTIONS)} with the {_limb(rng)} {rng.choice(_BENDS)}."
    if pattern == 1:
        return f"Their {_limb(rng)} is {rng.choice(_BENDS)} and points {rng.choice(_DIRECTIONS)}."
    if pattern == 2:
        return f"The {rng.choice(_BODY)} leans {rng.choice(_DIRECTIONS)}."
    if pattern == 3:
        return (f"The {_limb(rng)} is bent at about {rng.choice(_NUMBERS)} degrees while the "
                f"{_limb(rng)} stays {rng.choice(_BENDS)}.")
    if pattern == 4:
        return f"Someone {rng.choice(_ACTIONS)}, {rng.choice(_BODY)} turned {rng.choice(_DIRECTIONS)}."
    if pattern == 5:
        return (f"The {_limb(rng)} is {rng.choice(_DIRECTIONS)} and the {_limb(rng)} is "
                f"{rng.choice(_DIRECTIONS)}.")
    if pattern == 6:
        return f"A person {rng.choice(_ACTIONS)}; the hands are {rng.choice(_DIRECTIONS)}."
    return f"The {_limb(rng)} is close to the {_limb(rng)}, and the knees are {rng.choice(_BENDS)}."


def _generic_sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 14))]
    return " ".join(words).capitalize() + rng.choice((".", ".", "?", "!", ","))


def _prompt_sentence(rng: random.Random) -> str:
    return rng.choice(_PROMPTS).format(label=rng.choice(_LABELS), side=rng.choice(_SIDES),
                                       limb=rng.choice(_LIMBS), direction=rng.choice(_DIRECTIONS))


def build_corpus(num_lines: int = 6000) -> list[str]:
    """Return ``num_lines`` lines of template text; identical on every call (fixed seed)."""
    rng = random.Random(20240611)
    lines: list[str] = []
    for i in range(num_lines):
        kind = i % 6
        if kind in (0, 1, 2):
            lines.append(" ".join(_pose_sentence(rng) for _ in range(rng.randint(1, 3))))
        elif kind == 3:
            lines.append(_prompt_sentence(rng))
        elif kind == 4:
            lines.append(" ".join(_generic_sentence(rng) for _ in range(rng.randint(1, 3))))
        else:
            lines.append(rng.choice(_GENERIC) + " " + rng.choice(_LABELS).capitalize() + ".")
    return lines
