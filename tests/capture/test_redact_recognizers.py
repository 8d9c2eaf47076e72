"""What the recognisers of capture/recognizers.py find, and what ordinary support and code text they leave."""

from __future__ import annotations

import re

import pytest

from tuneloop.capture.redact import Redactor


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    r = Redactor(hash_key=b"test-key")
    r.warm_up()
    return r


def redact(redactor: Redactor, text: str) -> str:
    [out] = redactor.redact_texts([text], "redact")
    return out


FOUND = [
    # Street addresses: a common suffix alone, a rare one with a unit or city/state/ZIP, or after "live at".
    ("Please ship it to 742 Evergreen Terrace today", "to <STREET_ADDRESS> today"),
    ("I moved to 12 main st last week", "to <STREET_ADDRESS> last week"),
    ("It went to 41925 Jones Estate Suite 824 instead", "to <STREET_ADDRESS> instead"),
    ("Use 248 Cook Park, Sherriport, WI 53987 for invoices", "Use <STREET_ADDRESS> for invoices"),
    ("I live at 3513 Vargas Prairie now", "at <STREET_ADDRESS> now"),
    # Streets as Europe writes them, and the postcodes that follow them.
    ("I live at 10 rue de la Paix, 75002 Paris", "at <STREET_ADDRESS>, <ZIP_CODE> Paris"),
    ("Ich wohne in der Hauptstraße 12, 10115 Berlin", "der <STREET_ADDRESS>, <ZIP_CODE> Berlin"),
    ("send it to Berliner Str. 5 please", "to <STREET_ADDRESS> please"),
    ("vivo en Calle Mayor 5, Madrid", "en <STREET_ADDRESS>, Madrid"),
    ("Keizersgracht 123, 1015 CJ Amsterdam", "<STREET_ADDRESS>, <ZIP_CODE> Amsterdam"),
    ("Send it to 221B Baker Street, London NW1 6XE", "London <ZIP_CODE>"),
    ("my postcode is SW1A 1AA", "is <ZIP_CODE>"),
    # ZIP codes: after a state code, or after "zip"/"postal code".
    ("I'm in Springfield, IL 62704 this month", "Springfield, <ZIP_CODE> this"),
    ("my zip code is 11691-0591", "is <ZIP_CODE>"),
    ("Postal code: 02139", "code: <ZIP_CODE>"),
    # Dates of birth in any usual format, after a birth word.
    ("I was born on March 14, 1985.", "on <DATE_OF_BIRTH>."),
    ("DOB 07/02/1963, member id attached", "DOB <DATE_OF_BIRTH>, member"),
    ("Date of birth: 1991-06-28", "birth: <DATE_OF_BIRTH>"),
    ("my birthday is 14 March 1985 btw", "is <DATE_OF_BIRTH> btw"),
    ("born in 1985 in Ohio", "born in <DATE_OF_BIRTH> in"),
    # Ages.
    ("I am 34 years old and new here", "I am <AGE> years old"),
    ("my son is a 12-year-old", "a <AGE>-year-old"),
    ("Applicant aged 46, please review", "aged <AGE>,"),
    ("Age: 57", "Age: <AGE>"),
    # Obfuscated emails.
    ("write to jane(at)example(dot)com please", "to <EMAIL_ADDRESS> please"),
    ("contact: thull [at] example [dot] com", "contact: <EMAIL_ADDRESS>"),
    ("mail nsawyer AT example DOT org today", "mail <EMAIL_ADDRESS> today"),
    ("it is jane dot doe at example dot com ok", "is <EMAIL_ADDRESS> ok"),
    ("reach mark at gmail.com soon", "reach <EMAIL_ADDRESS> soon"),  # a census name before "at"
    ("write to sunshine at gmail.com", "to <EMAIL_ADDRESS>"),  # a word, but at a mailbox provider
    # An address on an IP literal, and a company's mail host with no top-level domain after a mail word.
    ("Mail jane.doe@[192.168.1.1] please", "Mail <EMAIL_ADDRESS> please"),
    ("write to priya.raman@northwind or ops@intranet", "to <EMAIL_ADDRESS> or <EMAIL_ADDRESS>"),
    ("my email is jane@corp-mail, thanks", "is <EMAIL_ADDRESS>, thanks"),
    # Phone numbers: local 7 digits, NANP with an extension or "001", and any grouping after "call".
    ("call me at 555-0187 tonight", "at <PHONE_NUMBER> tonight"),
    # A label before a call word no longer says the number is the order's.
    ("For your order, simply call 415-555-3351.", "simply call <PHONE_NUMBER>."),
    ("my number is 927 9308", "is <PHONE_NUMBER>"),
    ("reach me at 8536934", "at <PHONE_NUMBER>"),
    ("office: (269)807-4391x5000", "office: <PHONE_NUMBER>"),
    ("My number is 001-293-368-4735, text is fine", "is <PHONE_NUMBER>, text"),
    ("You can reach our office on 539 737 813 during the day", "on <PHONE_NUMBER> during"),
    # Cards from Mastercard's 2-series; SSNs spaced, dotted, and the published sample number.
    ("card number: 2227-9057-8771-0865 exp 09/27", "number: <CREDIT_CARD> exp"),
    # Cards grouped by dots, slashes or underscores, or written in another script's digits.
    ("my card is 4111.1111.1111.1111 thanks", "is <CREDIT_CARD> thanks"),
    ("card 4111/1111/1111/1111 ok", "card <CREDIT_CARD> ok"),
    ("card 4111_1111_1111_1111 ok", "card <CREDIT_CARD> ok"),
    ("card ٤١١١ ١١١١ ١١١١ ١١١١ ok", "card <CREDIT_CARD> ok"),
    ("card ४१११ ११११ ११११ ११११ ok", "card <CREDIT_CARD> ok"),
    # Addresses URL- or HTML-encoded, half obfuscated, spaced, broken by a line, or with a quoted local part.
    ("email jane%40example.com please", "email <EMAIL_ADDRESS> please"),
    ("write to john%40example%2Ecom", "to <EMAIL_ADDRESS>"),
    ("write to john&#64;example.com", "to <EMAIL_ADDRESS>"),
    ("write to john&#x40;example.com ok", "to <EMAIL_ADDRESS> ok"),
    ("write to john&commat;example&period;com ok", "to <EMAIL_ADDRESS> ok"),
    ("write to john@example(dot)com ok", "to <EMAIL_ADDRESS> ok"),
    # Markdown's backslash escapes: shown as the punctuation they escape.
    ("write to carol\\@example\\.com ok", "to <EMAIL_ADDRESS> ok"),
    ("card 4111\\-1111\\-1111\\-1111 ok", "card <CREDIT_CARD> ok"),
    ("phone 415\\-555\\-0132 ok", "phone <PHONE_NUMBER> ok"),
    # Digit groups parted by a dash other than "-", a middle dot, a run of spaces, a tab or a line break.
    ("card 4111\u20131111\u20131111\u20131111 ok", "card <CREDIT_CARD> ok"),
    ("card 4111\u20141111\u20141111\u20141111 ok", "card <CREDIT_CARD> ok"),
    ("card 4111\u22121111\u22121111\u22121111 ok", "card <CREDIT_CARD> ok"),
    ("Card: 4111  1111 1111 1111", "Card: <CREDIT_CARD>"),
    ("card 4111\t1111\t1111\t1111 ok", "card <CREDIT_CARD> ok"),
    ("card 4111\r\n1111\r\n1111\r\n1111 ok", "card <CREDIT_CARD> ok"),
    ("card 4111 - 1111 - 1111 - 1111 ok", "card <CREDIT_CARD> ok"),
    ("ssn 123\u201345\u20136789 ok", "ssn <US_SSN> ok"),
    ("iban NL91\u2013ABNA\u20130417\u20131643\u201300 ok", "iban <IBAN_CODE> ok"),
    ("IBAN\nDE89\n3704\n0044\n0532\n0130\n00", "IBAN\n<IBAN_CODE>"),
    ("phone 415\u00b7555\u00b70134 ok", "phone <PHONE_NUMBER> ok"),
    ("Phone: 415\n555\n0134", "Phone: <PHONE_NUMBER>"),
    ("my SSN:078051120", "my SSN:<US_SSN>"),
    # JSON's \\uXXXX escapes inside text, as a tool call's arguments carry them.
    ('args {"email": "jane\\u0040example.com"} ok', 'args {"email": "<EMAIL_ADDRESS>"} ok'),
    ('{"phone": "415\\u002d555\\u002d0134"}', '{"phone": "<PHONE_NUMBER>"}'),
    ('{"name": "Jos\\u00e9 Garc\\u00eda", "city": "Madrid"}', '{"name": "<PERSON>", "city": "Madrid"}'),
    ("write to john @ example . com ok", "to <EMAIL_ADDRESS> ok"),
    ("write to john \t@example.com ok", "to <EMAIL_ADDRESS> ok"),
    ("write to john@example\t.com ok", "to <EMAIL_ADDRESS> ok"),
    ('contact "jane.doe"@example.com today', "contact <EMAIL_ADDRESS> today"),
    ("mail jane@example.com. Org chart attached", "mail <EMAIL_ADDRESS>. Org chart"),
    # A card typed digit by digit; a device's hardware address; document numbers after their document.
    ("card 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 ok", "card <CREDIT_CARD> ok"),
    ("my router is 00:1A:2B:3C:4D:5E please", "is <MAC_ADDRESS> please"),
    ("mac 001a.2b3c.4d5e", "mac <MAC_ADDRESS>"),
    ("arp says 0:1a:2b:3c:4d:e at en0", "says <MAC_ADDRESS> at"),
    ("passport number X1234567 expires", "number <ID_NUMBER> expires"),
    ("my driving licence is MORGA657054SM9IJ.", "is <ID_NUMBER>."),
    ("national ID 8001015009087", "ID <ID_NUMBER>"),
    ("My router's MAC is 00:1A:2B:3C:4D:5E.", "is <MAC_ADDRESS>."),
    ("MAC 001A2B3C4D5E please", "MAC <MAC_ADDRESS> please"),
    ("My card number is 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1.", "is <CREDIT_CARD>."),
    ("身份证号110101199003074514", "身份证号<ID_NUMBER>"),
    ("my NI number is AB 12 34 56 C thanks", "is <ID_NUMBER> thanks"),
    ("aadhaar 2345 6789 0124 please", "aadhaar <ID_NUMBER> please"),
    # A combining mark or variation selector on the last character hides nothing, and goes with it.
    ("email jane@example.com\ufe0f ok", "email <EMAIL_ADDRESS> ok"),
    ("ssn 123-45-6789\u0301 ok", "ssn <US_SSN> ok"),
    # Digits spelled out, the number's groups parted by commas or not at all.
    ("call me on four one five, five five five, two six seven one", "on <PHONE_NUMBER>"),
    ("card four one one one one one one one one one one one one one one one ok", "card <CREDIT_CARD> ok"),
    # Values glued to a script written without spaces, and its own words for "phone".
    ("メールはjane@example.comです", "メールは<EMAIL_ADDRESS>です"),
    # A name glued to an address is its local part (an internationalised address): it goes with it.
    ("请联系张伟123@163.com。", "请<EMAIL_ADDRESS>。"),
    ("김민수kim@naver.com 입니다", "<EMAIL_ADDRESS> 입니다"),
    ("カード4111111111111111です", "カード<CREDIT_CARD>です"),
    ("电话是13800138000", "电话是<PHONE_NUMBER>"),
    ("我的手机号码是 13800138000。", "是 <PHONE_NUMBER>。"),
    ("전화번호는 010-1234-5678입니다", "전화번호는 <PHONE_NUMBER>입니다"),
    ("โทร0812345678ครับ", "โทร<PHONE_NUMBER>ครับ"),
    ("ssn 536 90 4399", "ssn <US_SSN>"),
    ("my social security number is 536.90.4399", "is <US_SSN>"),
    ("my ssn is 123 45 6789", "is <US_SSN>"),
    # A lower-case IBAN is an IBAN, and the word before it is no name.
    ("iban de89 3704 0044 0532 0130 00 pls", "iban <IBAN_CODE> pls"),
    ("iban de89370400440532013000 pls", "iban <IBAN_CODE> pls"),
    # Names: introduced in lower case, greeted, addressed by a verb, with titles and particles.
    ("my name is jane doe and I need help", "is <PERSON> and"),
    ("name: ignacia chiappetta", "name: <PERSON>"),
    ("Thanks Ksawery, much appreciated!", "Thanks <PERSON>, much"),
    ("Regards, Carola Gierschner-Pergande", "Regards, <PERSON>"),
    ("Hello, Aria here.", "Hello, <PERSON> here."),
    ("Amelie Laurent here, you can text me. How do I cook rice?", "<PERSON> here, you can"),
    ("Sorry to bother you. Amelie Laurent here: my order is late", "you. <PERSON> here: my"),
    ("We met Ranveer Kibe at the conference", "met <PERSON> at"),
    ("Please forward this to Cristina Campano before Friday", "to <PERSON> before Friday"),
    ("cc Herr Rüdiger Ruppersberger — she owns it", "cc <PERSON> — she"),
    ("Thanks Ashley van der Linden, that fixed it!", "Thanks <PERSON>, that"),
    ("Regards, Almudena de Grau", "Regards, <PERSON>"),
    ("Contact Sig. Patrizio Martucci, our IT lead", "Contact <PERSON>, our"),
    ("Send the signed contract to Bakhshi Chakraborty today", "to <PERSON> today"),
    ("Lidia Midura asked me to open this ticket", "<PERSON> asked me"),
    ("Thanks LaToya McDonald for the quick reply", "Thanks <PERSON> for"),
    # A first name and a surname of the census lists, where the model reads no name; a lone first name
    # after a word that points at someone or before a verb of people; a lower-case pair only so.
    ("Fixed answer for Olivia Hargreaves", "for <PERSON>"),
    ("Updated by Candace Whitlock yesterday", "by <PERSON> yesterday"),
    ("please escalate to lowell samuels today", "to <PERSON> today"),
    ("Christine said the app crashed", "<PERSON> said the"),
    ("ping Candace about the refund", "ping <PERSON> about"),
    ("Hargreaves, Olivia asked for a refund", "<PERSON> asked"),
    # A ticket's field, a chat's or a forum's handle that holds a name.
    ("Assigned to: Priya Raman, due Friday", "Assigned to: <PERSON>, due"),
    ("@olivia can you check the logs", "@<PERSON> can you"),
    ("thanks @jsmith for the fix", "@<PERSON> for"),
    ("my handle is olivia_h92, ping me there", "is <PERSON>, ping"),
    ("gamertag = xXdragon99Xx tonight", "= <PERSON> tonight"),
    ("Contact Siobhán Ó Briain about the invoice", "Contact <PERSON> about"),
    # A mail host under a private network's top-level domain, with no word about mail before it.
    ("ping jane.doe@hq.corp.internal today", "ping <EMAIL_ADDRESS> today"),
    ("the login olivia.hargreaves failed twice", "login <PERSON> failed"),
    # Introductions in other European languages, in any case.
    ("Bonjour, je m'appelle Jean-Baptiste Dupont.", "je m'appelle <PERSON>."),
    ("Hallo, mein Name ist Jürgen Müller, ich habe", "ist <PERSON>, ich"),
    ("hola, me llamo maría josé y necesito ayuda", "llamo <PERSON> y necesito"),
    ("Ciao, mi chiamo Giulia Bianchi", "chiamo <PERSON>"),
    ("Olá, meu nome é João Silva", "é <PERSON>"),
    ("Goedemiddag, mijn naam is Sanne de Vries", "is <PERSON>"),
]


@pytest.mark.parametrize(("text", "expected"), FOUND, ids=[t for t, _ in FOUND])
def test_recognisers_replace_the_value_and_keep_the_words_around_it(
    redactor: Redactor, text: str, expected: str
) -> None:
    out = redact(redactor, text)
    assert expected in out, out
    # Nothing of the value is left: none of its words appears in the output.
    pattern = re.sub(r"<[A-Z_]+>", "(.+?)", re.escape(expected).replace(r"\<", "<").replace(r"\>", ">"))
    values = re.search(pattern, text, re.DOTALL)
    assert values is not None
    for value in values.groups():
        assert not set(re.findall(r"\w+", value)) & set(re.findall(r"\w+", out)), out


def test_a_form_with_several_values_loses_them_all(redactor: Redactor) -> None:
    text = "Hi, I'm Natalia Blanco, born 05/30/1994, and I live at 22584 Candice Mills, Austin, TX 73301."
    assert redact(redactor, text) == "Hi, I'm <PERSON>, born <DATE_OF_BIRTH>, and I live at <STREET_ADDRESS>."


@pytest.mark.parametrize(
    "text", ["Jane Doe jane@x.com", "Jane Doe jane@x.com thanks", "Maria Garcia 4111 1111 1111 1111"]
)
def test_a_name_the_model_reads_together_with_an_address_or_number_is_still_redacted(
    redactor: Redactor, text: str
) -> None:
    # spaCy tags "Jane Doe jane@x.com" as one PERSON; the address in it must not make the name stay.
    out = redact(redactor, text)
    assert out.startswith("<PERSON> <"), out
    assert not {"Jane", "Doe", "Maria", "Garcia"} & set(re.findall(r"\w+", out)), out


def test_hash_mode_joins_an_obfuscated_email_with_its_plain_spelling(redactor: Redactor) -> None:
    plain, obfuscated, encoded, other, html, quoted, broken = redactor.redact_texts(
        [
            "mail jane@example.com",
            "mail jane(at)example(dot)com",
            "mail jane%40example.com",
            "mail jane [at] example [dot] org",
            "mail jane&#64;example%2Ecom",
            'mail "jane"@example.com',
            "mail jane\n@example.com",
        ],
        "hash",
    )
    assert plain == obfuscated == encoded == html == quoted == broken
    assert plain != other
    assert re.fullmatch(r"mail <EMAIL_ADDRESS:[0-9a-f]{12}>", other)


def test_hash_mode_joins_a_card_in_another_scripts_digits_with_its_ascii_spelling(redactor: Redactor) -> None:
    texts = ["card 4111.1111.1111.1111", "card ٤١١١ ١١١١ ١١١١ ١١١١"]
    ascii_digits, arabic = redactor.redact_texts(texts, "hash")
    assert ascii_digits == arabic


ORDINARY = [
    "Version 2.3.1 crashes on startup, see build 13100596",
    "Run `pip install tuneloop==1.10.8` and then `tuneloop serve --port 16938`.",
    "def total(items): return sum(i.price * i.qty for i in items)",
    "SELECT id FROM orders WHERE total > 500 LIMIT 20;",
    "Order 112-3456789-1234567 has not arrived yet",
    "Invoice 48213 was paid twice: $1,250.00 and $1,250.00",
    "Ticket #55512345: the dark mode toggle resets",
    "We run 3 Data Centers and need a 4 TB drive per node.",
    "Call me tomorrow if the name is still misleading in the UI.",
    "Hi Team, the release notes mention 5 breaking changes.",
    "Thanks Again for the quick fix!",
    "The door handle is loose and my login is broken.",
    # UI labels: English words and no census names, which the small model reads as people.
    "Go to Manage Trip and select Add Pet.",
    "Open Bags and choose Add Bag.",
    "Can I take Bereavement leave when my grandmother dies?",  # Webster's word, no WordPiece one
    # A plain word before a spelt "at", or a domain with a path, is prose and a web address.
    "You can file a damage claim at parcelo.com/claim or check the status at parcelo.com.",
    "Visit us at parcelo.com for more.",
    "my order number is 415-555-3351",
    "Deploy to prod at 10:30 on 2024-05-01, rollback by 2024-05-02.",
    "Age of the cache entry: 30 seconds, TTL 300 s.",
    "Set the cache max age 3600 and the cookie age 30 days.",
    "jobs:\n  test:\n    name: build and test\n    runs-on: ubuntu-latest",
    "Meet at the office dot com bubble talk, 2 pm.",
    "Memory usage climbs to 7.63 GB after 2 hours.",
    "Set max_tokens to 500 and temperature to 0.7, retry 3 times.",
    "I am having trouble logging in since Monday.",
    "Our contract renews on 2026-03-01, can we change plans?",
    "Microsoft Teams says I am offline; Google Drive needs a new sign-in.",
    "Send the logs to Customer Success and upload them to Google Drive.",
    "Train a LoRA adapter on SQLite data behind an OpenAI-compatible API.",
    "version: null   # reward model version id",
    "Teams of 500-1000 users see pages 100-2000 load slowly.",
    "The Samsung Galaxy S3 4GB model and Route 66 and place 3 orders.",
    "Calle 5 is closed; the Route 53 record points at version 4.1 on Ubuntu 22.04.",
    "Boulevard of Broken Dreams 2004 album, 40%40 split, build 2024.11.11.1111",
    'He said "hi" and left @ 5. Then the office . Com',
    "See https://x.com/a%2Eb and 3 &#46; 4 &period;",
    "See pages 10\u201320, chapters 3 \u2013 5, the 2023\n2024 totals and Step:2 of the README.",
    "y = weights@inputs + bias; then ssh root@buildbox and git push origin@main",
    "Pick one, two or three of them; the steps are one two three four five six.",
    "1. Click Add printer. Can I install Jira myself? Adobe Acrobat won't open PDFs.",
    "Some popular payment platforms like PayPal, Venmo, and Zelle.",
    "Set Max Age to 3600; the Grace Period settings moved; see config.yaml and the max_age key.",
    "Go to Page 3, then to page 4 of the guide.",
    "@app.route('/x') over @property, @Getter @Setter; npm i @types/node; @here the build is red.",
    "Visit Virginia Beach with a Chase Sapphire card in Sterling Silver.",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_support_and_code_text_is_left_alone(redactor: Redactor, text: str) -> None:
    assert redact(redactor, text) == text


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("OBFUSCATED_EMAIL", "1." * 20_000),  # the old local part: about 45 s
        ("OBFUSCATED_EMAIL", "a dot " * 7_000),
        ("LOCAL_HOST_EMAIL", "x@" + "a" * 80_000 + "@a"),  # the old host: about 26 s
    ],
)
def test_an_email_pattern_scans_a_crafted_text_in_linear_time(pattern: str, text: str) -> None:
    """Every capture's text runs through these: one that backtracks quadratically holds the GIL, so every
    tenant's requests wait while it scans."""
    import time

    import regex

    from tuneloop.capture import pii_patterns

    compiled = regex.compile(getattr(pii_patterns, pattern))
    started = time.perf_counter()
    list(compiled.finditer(text))
    assert time.perf_counter() - started < 5


def test_a_name_repeated_through_a_long_text_is_redacted_everywhere_in_linear_time(
    redactor: Redactor,
) -> None:
    """Each find's other occurrences are checked against what is already covered by bisection, not a scan of
    every range (80,000 characters of one name took 6.5 s)."""
    import time

    from tuneloop.capture.redact import _Covered, _propagate

    text = "My name is Jane Doe. " + "Jane Doe " * 9_000
    start = text.index("Jane Doe")
    finds = [("PERSON", start, start + len("Jane Doe"), 0.85)]
    started = time.perf_counter()
    [spans] = _propagate([text], [finds], [0])
    assert time.perf_counter() - started < 5
    assert len(spans) == 9_001 and all(text[s:e] in ("Jane Doe", "Jane", "Doe") for _, s, e, _ in spans)
    covered = _Covered([(10, 20), (15, 30), (40, 50)])
    assert covered.overlaps(29, 31) and covered.overlaps(0, 11) and covered.overlaps(45, 46)
    assert not covered.overlaps(30, 40) and not covered.overlaps(0, 10) and not covered.overlaps(50, 60)
    covered.add(32, 35)
    assert covered.overlaps(34, 36) and not covered.overlaps(35, 40)
