"""A French corpus for the personal-data benchmark, generated with valid check digits.

    .venv/bin/python bench/pii_fr.py [--texts N] [--seed S] [--out bench/pii_fr.json]

Each text is a French sentence from a template, filled with French people's names (accents and
compound names included), e-mail addresses, phone numbers in their usual spellings
(``06 12 34 56 78``, ``06.12.34.56.78``, ``0612345678``, ``+33 6 12 34 56 78``, ``+33612345678``),
and identifiers whose keys are computed as their registries define them: the NIR (key 97 less the
number modulo 97, Corsica's 2A/2B as 19/18), SIREN and SIRET (Luhn), and the French IBAN (its RIB
key, then ISO 13616's check digits). The format is the one of ``generated_large.json`` (the
text, then each span's type, value and offsets), so ``bench/pii.py`` reads both alike. The file
is committed (``bench/pii_fr.json``); the same seed writes the same file.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import unicodedata
from pathlib import Path
from typing import Any

FIRST = [
    "Jean",
    "Marie",
    "Pierre",
    "Sophie",
    "Camille",
    "Léa",
    "Chloé",
    "Manon",
    "Inès",
    "Julien",
    "Nicolas",
    "Thomas",
    "Hugo",
    "Lucas",
    "Mathilde",
    "Élodie",
    "Hélène",
    "Céline",
    "Aurélie",
    "François",
    "Benoît",
    "Jérôme",
    "Stéphane",
    "Gaëlle",
    "Noémie",
    "Jean-Pierre",
    "Marie-Claire",
    "Anne-Sophie",
    "Baptiste",
    "Clément",
    "Théo",
    "Maëlle",
    "Zoé",
    "Océane",
    "Loïc",
    "Hervé",
    "Yannick",
    "Sébastien",
    "Amélie",
    "Brigitte",
    "Dominique",
    "Mireille",
    "Gérard",
    "Josiane",
    "Karima",
    "Mohamed",
    "Yasmine",
]
LAST = [
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefèvre",
    "Michel",
    "Garcia",
    "David",
    "Bertrand",
    "Roux",
    "Vincent",
    "Fournier",
    "Morel",
    "Girard",
    "André",
    "Mercier",
    "Dupont",
    "Lambert",
    "Bonnet",
    "François",
    "Martinez",
    "Legrand",
    "Garnier",
    "Faure",
    "Rousseau",
    "Blanc",
    "Guérin",
    "Muller",
    "Henry",
    "Roussel",
    "Nicolas",
    "Perrin",
    "Morin",
    "Mathieu",
    "Clément",
    "Gauthier",
    "Dumont",
    "Lopez",
    "Fontaine",
    "Chevalier",
    "Robin",
    "Le",
    "Gall",
    "Benali",
    "Nguyen",
    "Lemaître",
    "Kerbrat",
    "Dufresne",
    "Saint-Martin",
]
DOMAINS = ["orange.fr", "free.fr", "gmail.com", "laposte.net", "mairie-lyon.fr", "exemple.fr"]
DEPARTMENTS = [f"{d:02d}" for d in range(1, 96) if d != 20] + ["2A", "2B"]
TEMPLATES = [
    "Bonjour, je m'appelle {PERSON} et mon numéro de sécurité sociale est {FR_NIR}.",
    "Pouvez-vous rappeler {PERSON} au {PHONE_NUMBER} avant vendredi ?",
    "La facture de la société (SIREN {FR_SIREN}) est à régler sur l'IBAN {IBAN_CODE}.",
    "Le dossier de {PERSON} concerne l'établissement SIRET {FR_SIRET}, merci de vérifier.",
    "Écrivez à {EMAIL_ADDRESS} ou appelez le {PHONE_NUMBER}, demandez {PERSON}.",
    "Madame {PERSON} a changé de banque : son nouvel IBAN est {IBAN_CODE}.",
    "Pour l'assuré {FR_NIR}, le médecin traitant est le docteur {PERSON}.",
    "J'ai rencontré {PERSON} hier avec {PERSON} ; ils attendent notre réponse.",
    "Le contrat entre {PERSON} et l'entreprise {FR_SIREN} a été signé le 3 mars.",
    "Merci de transmettre le courrier à {PERSON}, {EMAIL_ADDRESS}, tél. {PHONE_NUMBER}.",
    "Notre client {PERSON} (SIRET {FR_SIRET}) demande un remboursement sur {IBAN_CODE}.",
    "Salut {PERSON}, tu peux me joindre au {PHONE_NUMBER} ou sur {EMAIL_ADDRESS}.",
    "Le numéro INSEE {FR_NIR} ne correspond pas au nom {PERSON} dans notre base.",
    "Réunion à 14 h avec {PERSON} ; ordre du jour : budget 2025 et recrutement.",
]


def luhn_digit(number: str) -> str:
    """The digit that makes ``number`` + it pass Luhn."""
    for d in "0123456789":
        total = 0
        for i, c in enumerate(reversed(number + d)):
            v = int(c) * (2 if i % 2 else 1)
            total += v - 9 if v > 9 else v
        if total % 10 == 0:
            return d
    raise AssertionError("unreachable")


def nir(r: random.Random) -> str:
    dept = r.choice(DEPARTMENTS)
    body = f"{r.choice('12')}{r.randint(0, 99):02d}{r.randint(1, 12):02d}{dept}"
    body += f"{r.randint(1, 990):03d}{r.randint(1, 999):03d}"
    key = 97 - int(body.replace("2A", "19").replace("2B", "18")) % 97
    spaced = r.random() < 0.6
    if spaced:
        return f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:13]} {key:02d}"
    return f"{body}{key:02d}"


def siren(r: random.Random) -> str:
    head = f"{r.randint(1, 99_999_999):08d}"
    return head + luhn_digit(head)


def spaced_siren(value: str, r: random.Random) -> str:
    return f"{value[:3]} {value[3:6]} {value[6:]}" if r.random() < 0.6 else value


def siret(r: random.Random) -> str:
    head = siren(r) + f"{r.randint(1, 9999):04d}"
    value = head + luhn_digit(head)
    return f"{value[:3]} {value[3:6]} {value[6:9]} {value[9:]}" if r.random() < 0.6 else value


def iban(r: random.Random) -> str:
    bank, branch = f"{r.randint(10000, 99999)}", f"{r.randint(0, 99999):05d}"
    account = f"{r.randint(0, 10**11 - 1):011d}"
    rib = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97
    bban = f"{bank}{branch}{account}{rib:02d}"
    numeric = "".join(str(int(c, 36)) for c in bban + "FR00")
    value = f"FR{98 - int(numeric) % 97:02d}{bban}"
    if r.random() < 0.6:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def phone(r: random.Random) -> str:
    first = r.choice("1234567896677")
    pairs = [f"{r.randint(0, 99):02d}" for _ in range(4)]
    style = r.randrange(6)
    if style == 0:
        return f"0{first} " + " ".join(pairs)
    if style == 1:
        return f"0{first}." + ".".join(pairs)
    if style == 2:
        return f"0{first}" + "".join(pairs)
    if style == 3:
        return f"+33 {first} " + " ".join(pairs)
    if style == 4:
        return f"+33{first}" + "".join(pairs)
    return f"0{first}-" + "-".join(pairs)


def person(r: random.Random) -> str:
    return f"{r.choice(FIRST)} {r.choice(LAST)}"


def ascii_of(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z.\-]", "", plain.lower().replace(" ", "."))


def email(r: random.Random) -> str:
    return f"{ascii_of(person(r))}@{r.choice(DOMAINS)}"


MAKERS = {
    "PERSON": person,
    "FR_NIR": nir,
    "FR_SIREN": lambda r: spaced_siren(siren(r), r),
    "FR_SIRET": siret,
    "IBAN_CODE": iban,
    "PHONE_NUMBER": phone,
    "EMAIL_ADDRESS": email,
}


def text(r: random.Random) -> dict[str, Any]:
    template = r.choice(TEMPLATES)
    out, spans, at = "", [], 0
    for m in re.finditer(r"\{([A-Z_]+)\}", template):
        out += template[at : m.start()]
        value = MAKERS[m.group(1)](r)
        spans.append(
            {
                "entity_type": m.group(1),
                "entity_value": value,
                "start_position": len(out),
                "end_position": len(out) + len(value),
            }
        )
        out += value
        at = m.end()
    out += template[at:]
    return {"full_text": out, "spans": spans, "template": template}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--texts", type=int, default=400)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("pii_fr.json"))
    args = p.parse_args(argv)
    r = random.Random(args.seed)
    corpus = [text(r) for _ in range(args.texts)]
    lines = ",\n".join(json.dumps(t, ensure_ascii=False) for t in corpus)
    args.out.write_text(f"[\n{lines}\n]\n")  # one text a line: a readable diff
    print(f"{len(corpus)} texts written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
