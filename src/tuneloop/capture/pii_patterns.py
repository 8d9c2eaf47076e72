"""Regular expressions and word lists for the PII formats Presidio does not know (no model is loaded here)."""

from __future__ import annotations

import re


def _words(text: str) -> list[str]:
    return text.split()


# USPS Publication 28 street suffixes (full names and the usual abbreviations) and a few British ones.
STREET_SUFFIXES = _words("""
Alley Aly Annex Arcade Avenue Ave Av Bayou Beach Bend Bluff Bluffs Bottom Boulevard Blvd Branch Bridge Brook
Brooks Burg Burgs Bypass Camp Canyon Cape Causeway Center Centers Circle Cir Circles Cliff Cliffs Close Club
Common Commons Corner Corners Course Court Ct Courts Cove Coves Creek Crescent Cres Crest Crossing Crossroad
Curve Dale Dam Divide Drive Dr Drives Estate Estates Expressway Expy Extension Extensions Fall Falls Ferry
Field Fields Flat Flats Ford Fords Forest Forge Forges Fork Forks Fort Freeway Fwy Garden Gardens Gateway Glen
Glens Green Greens Grove Groves Harbor Harbors Haven Heights Highway Hwy Hill Hills Hollow Inlet Island
Islands Isle Junction Junctions Key Keys Knoll Knolls Lake Lakes Land Landing Lane Ln Light Lights Loaf Lock
Locks Lodge Loop Mall Manor Manors Meadow Meadows Mews Mill Mills Mission Motorway Mount Mountain Mountains
Neck Orchard Oval Overpass Park Parks Parkway Pkwy Parkways Pass Passage Path Pike Pine Pines Place Pl Plain
Plains Plaza Point Points Port Ports Prairie Radial Ramp Ranch Rapid Rapids Rest Ridge Ridges River Road Rd
Roads Route Rte Row Rue Run Shoal Shoals Shore Shores Skyway Spring Springs Spur Spurs Square Sq Squares
Station Stravenue Stream Street St Streets Summit Terrace Ter Throughway Trace Track Trafficway Trail Trl
Trailer Tunnel Turnpike Underpass Union Unions Valley Valleys Via Viaduct View Views Village Villages Ville
Vista Walk Walks Wall Way Ways Well Wells
""")
# Suffixes accepted after a lower-cased street name too ("12 main st"); words like "drive" or "square" are
# left out because "a 2 TB drive" or "3 square meters" are far more common in support text than addresses.
LOWERCASE_SUFFIXES = _words("street st avenue ave road rd boulevard blvd lane ln terrace parkway highway")
US_STATES = _words("""
AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK
OR PA RI SC SD TN TX UT VT VA WA WV WI WY AS GU MP PR VI UM AA AE AP FM MH PW
""")
# Titles before a name and degrees after it belong to the name.
TITLES = _words(
    "Mr Mrs Ms Mx Dr Dra Prof Herr Frau Sr Sra Srta Sig Ing Mme Mlle Dott Dhr Mevr Pan Pani Shri Smt"
)
DEGREES = _words("B.Sc. B.A. B.Eng. M.Sc. M.A. M.Eng. MBA PhD Ph.D. Jr. Sr. MD")
NAME_PARTICLES = _words(
    "van von de der den da das dos del della di du la le ten ter bin ibn al el Ó Ní Nic Uí"
)
# Words that stand where names do but are nobody's: after a greeting ("Hi Team"), verbs before a name
# ("Contact Stuart Wood"), and words the model mistakes for names ("ssn", "null").
NOT_NAMES = (
    _words("""
team all everyone everybody support again there guys folks sir madam customer admin world you much so for in
advance regards wishes i'm i’m im i'd i've i'll thanks thank hello hi hey dear cheers best sincerely kind
please yes no ok okay great good morning afternoon evening night monday tuesday wednesday thursday friday
saturday sunday january february march april june july august september october november december today
tomorrow yesterday contact refund upgrade ask send email call tell forward invite add remove give let bcc
message ping notify assign cc ssn iban dob zip pls thx null none true false nil et und ed pero mais aber
""")
    + _words("""
click tap select press choose open type enter restart reboot install uninstall navigate scroll update
download upload reset run sign log
""")
    + _words("""
jira confluence slack zoom teams outlook excel powerpoint onedrive sharepoint chrome firefox safari acrobat
adobe photoshop salesforce workday servicenow zendesk hubspot okta github gitlab bitbucket docker kubernetes
jenkins windows macos linux ubuntu android iphone ipad macbook thinkpad lenovo cisco anyconnect
globalprotect webex gmail dropbox notion asana trello figma canva tableau netflix spotify amazon uber paypal
venmo zelle stripe shopify ebay walmart airbnb lyft mastercard amex linkedin facebook instagram whatsapp
youtube tiktok discord
""")
)  # the verbs of a how-to's steps ("1. Click Add printer"), and products users name as if people


# Past tenses of talking, after which a name acts ("Lidia Midura asked me"), and words after which a lone
# first name is someone ("updated by Candace", "escalate to Rodolfo").
PEOPLE_VERBS = _words("asked said told wrote emailed called mentioned replied")
POINTING_WORDS = _words(
    "by from for to with cc ping ask tell contact thanks dear hi hello hey reviewer agent"
)
# First names of the US census lists (recognizers.KnownNameRecognizer) that are as often English words,
# places or products: "Will", "Grace Period", "Bill Pay", "Virginia Beach", "Ruby Gems" name nobody.
COMMON_WORD_NAMES = frozenset(
    _words("""
abbey ai al alpha amber angel angelic angle april argentina art august aura austin autumn bee bell belle berry
bill birdie blossom bo bob bonny booker brain brandy brook buck bud bunny buster candy caprice carol carry
carter chad chance charity chase cherry chin china christian chuck clay cliff cole conception coral crystal
daisy dale dallas dawn dee dell delta denver desire destiny diamond dimple don dot drew dung dusty earl
earnest easter ebony echo eden else emerald era ethyl fairy faith fawn fay fern florence forest foster frank
freeman gala gale garland garnet gay genesis geneva genie georgia german ginger glen glory golden goldie grace
grant guy ha hang hank harmony heath helena herb holly honey hope houston hue hunter in india iris isis ivy
jack jackson jade jasper jay jewel jordan joy july june junior karma kenya king kip kit kitty lady lance lane
laurel lean lee les liberty lily lincoln loan long lore love ma mac madison magnolia major man manual many
maple marine mark marquis marry marvel mason max may melody mercy merry meta mi mica min miss misty moon
morgan my na nana nick noble noel nova nu numbers olive omega opal orlando pa page palmer pansy paris parker
pasty pat patience pearl peg penny phoenix piper porter precious price prince princess prudence queen raven
ray reed regina rex rich rob rock rocky rod rose rosy royal ruby rusty sage sandy sari savannah scarlet season
see september shin sierra sol son song soon sparkle spring star sterling stormy summer sun sunday sunny
sunshine sydney ta tanner temple tequila terra terry tiara tiny tory trinity un valentine van velvet venus
victoria violet virginia viva wade walker wan ward washington will willow windy winter yen yon young
""")
)


def alternation(words: list[str]) -> str:
    """A regex alternation of `words`, escaped."""
    # Longest first, so "Streets" is not cut back to "Street" and "Ave" is not read as "Av".
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


_NUMBER = r"\d{1,6}[A-Za-z]?"
_DIRECTION = r"(?:North|South|East|West|[NSEW]\.?|[NS][EW]\.?)"
_CAPITALISED = r"\p{Lu}[\p{L}'’-]*"
_UNIT = r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|Fl\.?|Room|Rm\.?|#)\s*#?\d+[A-Za-z]?)"
_STATE = rf"(?:{alternation(US_STATES)})"
_ZIP = r"\d{5}(?:-\d{4})?"
_CITY_STATE_ZIP = rf",\s+{_CAPITALISED}(?:\s+{_CAPITALISED}){{0,2}},\s+{_STATE}(?:\s+{_ZIP})?"
# Suffixes that name little but streets; the rest ("Centers", "Point", "Station") need more to be an address.
COMMON_SUFFIXES = _words("""
Street St Avenue Ave Road Rd Boulevard Blvd Lane Ln Drive Dr Court Ct Place Pl Terrace Ter Parkway Pkwy
Highway Hwy Circle Cir Trail Trl Way Square Sq Close Crescent Plaza Alley
""")


def street_address(suffixes: list[str], *, tail: bool) -> str:
    """House number, street name, one of `suffixes`; with `tail`, then a unit or city, state and ZIP."""
    return (
        rf"(?<![\w.,-]){_NUMBER}(?:\s+{_DIRECTION})?"
        rf"(?:(?:\s+{_CAPITALISED}){{1,3}}\s+(?:{alternation(suffixes)})"
        rf"|(?:\s+[\p{{L}}'’-]+){{1,3}}\s+(?i:{alternation(LOWERCASE_SUFFIXES)}))"
        rf"\b\.?(?:{_UNIT}(?:{_CITY_STATE_ZIP})?|{_CITY_STATE_ZIP}){'' if tail else '?'}(?![\w-])"
    )


# Streets as French, Spanish, Italian and Portuguese write them (the kind of way first, the number before
# or after: "10 rue de la Paix", "Calle Mayor 5"), and German or Dutch ones (the kind as the name's ending:
# "Hauptstraße 12", "Berliner Str. 5", "Keizersgracht 123").
_STREET_KINDS = _words("""
rue avenue boulevard bd chemin allée allee impasse quai route cours place calle avenida avda paseo plaza
camino carrer via viale piazza corso largo vicolo rua travessa praça praca
""")
_LINK_WORDS = "de du des la le les del los las da do dos das di della dello dei degli"
_NAME_LINKS = rf"(?:(?:{alternation(_words(_LINK_WORDS))})\s+|[dl][’']\s*)*"
_NAME_WORDS = r"\p{Lu}[\p{L}'’.-]*(?:\s+(?:(?:de|del|la|di|da|do)\s+)?\p{Lu}[\p{L}'’.-]*){0,3}"
_STREET_ENDINGS = _words("""
straße strasse str. weg platz gasse allee damm ring ufer chaussee steig pfad markt
straat laan gracht plein kade singel dijk
""")
_HOUSE = r"\d{1,4}(?:\s?(?:bis|ter|[a-zA-Z]))?(?![\w])"
EUROPEAN_STREET = (
    rf"(?i:(?<![\w.,-])\d{{1,4}}(?:\s?(?:bis|ter))?,?\s+(?:{alternation(_STREET_KINDS)})\s+){_NAME_LINKS}"
    rf"{_NAME_WORDS}"
    rf"|(?<![\w-])(?i:(?:{alternation(_STREET_KINDS)}|C/))\s+{_NAME_LINKS}{_NAME_WORDS},?\s+"
    rf"(?:n\.?[º°]?\s*)?{_HOUSE}"
    rf"|(?<![\w-])(?:\p{{Lu}}\p{{L}}*|\p{{Lu}}\p{{L}}+\s+(?=\p{{Lu}}))(?i:{alternation(_STREET_ENDINGS)})\s+{_HOUSE}"
)
# UK postcodes ("NW1 6XE", "SW1A 1AA"), not sizes or models ("S3 4GB").
UK_POSTCODE = r"(?<![\w-])(?:[A-Z]{1,2}\d[A-Z\d]?|GIR)\s\d(?!(?:GB|MB|KB|TB)\b)[ABD-HJLNP-UW-Z]{2}(?![\w-])"
# Postal codes after a comma and before a town: five digits ("75002 Paris", "10115 Berlin") or Dutch ones
# ("1015 CJ Amsterdam").
POSTCODE_TOWN = r"(?<=,\s*)(?:\d{5}|\d{4}\s?[A-Z]{2})(?=\s+\p{Lu}\p{L}+)"

# Words before an address that say it is one, whatever its street suffix.
ADDRESS_WORDS = _words("address live reside ship deliver move send mail visit package parcel")
# "Springfield, IL 62704": a state code after a word, then five digits.
STATE_ZIP = rf"(?<=[\p{{L}}.],?\s){_STATE}\s+{_ZIP}\b"
ZIP = rf"(?<![\w-]){_ZIP}(?![\w-])"

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
DATE = (
    r"(?i)(?<![\w/.-])(?:\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})|\d{4}[/.-]\d{1,2}[/.-]\d{1,2}"
    rf"|{_MONTH}\s+{_DAY},?\s+\d{{4}}|{_DAY}\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}"
    r"|(?<=\bborn\s+in\s+)(?:19|20)\d{2})(?![\w/-])"
)
AGE = (
    r"(?i)(?<![\w.,])\d{1,3}(?=[\s-]*(?:years?|yrs?)[\s-]*old\b|\s*(?:yo|y/o|y\.o\.)(?!\w))"
    # "age 30" but not "max age 3600" or "cache age 30 s": a whole number of at most 3 digits, no unit after.
    r"|(?<=\b(?:aged?|age\s+is|age\s+of)[:\s]\s*)\d{1,3}(?![\d.,]*\d|\s*(?:ms|s|secs?|seconds?|mins?"
    r"|minutes?|h|hours?|days?)\b)"
    r"|(?<=\b(?:i'?m|i’m|i\s+am)\s+)\d{1,2}(?=\s*(?:[,.!;]|$|and\b|but\b|so\b))"
)

# "jane(at)example(dot)com", "jane [at] example [dot] com", "jane AT example DOT com", "jane@example(dot)com",
# "jane @ example . com", an address broken by a line or a tab, a quoted local part ("jane doe"@example.com).
_AT = r"(?:\s*[(\[{<]\s*at\s*[)\]}>]\s*|\s+at\s+|\s*@\s*)"
_DOT = r"(?:\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+|\s+\.\s*|\.)"
# The local part may be spelt out too: "jane dot doe at example dot com".
# Possessive, and a bounded count of spelt dots: "1.1.1…" and "a dot a dot …" backtracked quadratically (a
# 2,000-character piece of either took 115 ms; a 250 KB text, 31 s with the GIL held).
_LOCAL = rf"(?:\"[^\"\r\n]{{1,64}}\"|[\w.+-]++(?:{_DOT}[\w+-]+){{0,8}})"
# A domain followed by "/" is a web address's ("at parcelo.com/claim").
OBFUSCATED_EMAIL = rf"(?i)(?<![\w.+-]){_LOCAL}{_AT}[\w-]+(?:{_DOT}[\w-]+){{1,8}}(?![\w/-])"
_OBFUSCATION = re.compile(
    r"\s*[(\[{<]\s*(at|dot)\s*[)\]}>]\s*|\s+(at|dot)\s+|(?<=\S)(dot)(?=\S)|\s*(@)\s*|\s+(\.)\s*|(\")",
    re.IGNORECASE,
)


# Domains (their registered name) of free mailbox providers: an address there is a person's.
MAILBOX_PROVIDERS = frozenset(
    _words(
        "gmail googlemail yahoo ymail hotmail outlook live msn icloud me mac aol proton protonmail pm gmx web"
        " mail yandex zoho fastmail tutanota qq 163 126 naver daum"
    )
)


# "jane.doe@[192.168.1.1]": an address whose domain is an IP literal (RFC 5321), whole, not just its IP.
IP_LITERAL_EMAIL = r"(?<![\w.+-])[\w.+-]+@\[(?:IPv6:)?[0-9A-Fa-f.:]{2,45}\](?![\w-])"
# "priya.raman@northwind": a company's own mail host, no top-level domain. Code writes "a@b" too (Python's
# matrix product, "ssh root@host"), so only after a word about mail (`MAIL_WORDS`).
# Possessive host: giving back part of it never lets the lookahead pass, and each try rescanned the rest.
LOCAL_HOST_EMAIL = r"(?<![\w.+@-])[\w+-]+(?:\.[\w+-]+)*@\p{L}[\w-]*+(?:\.[\w-]+)*+(?![\w.@-]*\w)"
MAIL_WORDS = _words("email e-mail mail address write contact reach cc bcc inbox send forward message")
# "jane@corp.internal": names under the top-level domains kept for private networks and tests (ICANN's
# .internal, RFC 6762's .local, RFC 2606's .test and the usual in-house ones) are no public suffix, so the
# address check above passes them over; after a dot, such a name is a mail host wherever it stands.
PRIVATE_TLD_EMAIL = (
    r"(?<![\w.+@-])[\w+-]+(?:\.[\w+-]+)*@\p{L}[\w-]*(?:\.[\w-]+)*"
    r"\.(?i:internal|local|localdomain|lan|corp|home|intranet|private|test|example|invalid|localhost)(?![\w.@-]*\w)"
)


def canonical_email(value: str) -> str:
    """`value` with "(at)" and "(dot)" spelt "@" and ".", spaces around them and quotes dropped,
    lower-cased: every spelling hashes alike."""
    symbols = {"at": "@", "dot": ".", "@": "@", ".": ".", '"': ""}
    return _OBFUSCATION.sub(lambda m: symbols[next(g for g in m.groups() if g).lower()], value).lower()


# Any run of digit groups (7 to 15 digits) as a phone number: only ever used next to a phone context word,
# which also decides 7-digit local numbers ("555-0187" could as well be a range, "500-1000 users").
LOOSE_PHONE = r"(?<![\w+.-])(?:\+|00)?\(?\d{1,5}\)?(?:[ .-]?\(?\d{1,5}\)?){1,6}(?![\w-])"
# 3-3-4 groups (NANP), optionally "+1"/"1-"/"001-" before and an extension after: a phone number anywhere.
NANP_PHONE = (
    r"(?<![\w+.-])(?:(?:\+?1|001)[ .-]?)?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w-])"
)
INTERNATIONAL_PHONE = r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}(?!\w)"
# Words that say a number is not a phone number even when "number" or "call" is near it.
NOT_PHONE_WORDS = _words("""
order invoice ticket account case ref reference tracking id sku build row version item customer member
policy card iban ssn social security zip postal postcode serial pin code port error page line release
订单 單號 单号 编号 編號 版本 注文 주문 버전 โทรทัศน์
""")
PHONE_WORDS = _words(
    "call phone tel telephone mobile cell reach text whatsapp fax ring dial number contact"
    " 电话 電話 手机 手機 联系 聯絡 携帯 でんわ 전화 연락처 핸드폰 휴대폰 โทร เบอร์"
)
# Phone words that outweigh a label before them ("your order, simply call …"); "number" does not ("order
# number 4155550134").
CALL_WORDS = [w for w in PHONE_WORDS if w != "number"]

# A card number typed digit by digit ("4 1 1 1 1 1 1 1 …"): 13 to 19 single digits, each after one space,
# starting as cards do (2–6: rows of zeros and bit vectors are no cards).
SPACED_DIGITS = r"(?<![\w.-])[2-6](?: \d){12,18}(?![\w-]|\.\d)"
# A device's hardware address: six hex pairs joined by ":" or "-", or Cisco's three dotted quads. It
# identifies one person's laptop or router as well as a phone number does.
# macOS (`arp -a`, `ifconfig`) drops leading zeros: "0:1a:2b:3c:4d:5e".
MAC_ADDRESS = (
    r"(?<![\w:.-])(?:[0-9A-Fa-f]{1,2}(?::[0-9A-Fa-f]{1,2}){5}|[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})(?![\w:-]|\.[0-9A-Fa-f])"
)
# The same six pairs with spaces or nothing between them: only after a word that names a hardware address.
BARE_MAC_ADDRESS = r"(?<![\w:.-])[0-9A-Fa-f]{2}(?: ?[0-9A-Fa-f]{2}){5}(?![\w:-]|\.[0-9A-Fa-f])"
MAC_WORDS = _words("mac hardware ethernet wifi wi-fi wlan bssid")
# A document number after the document's name ("passport number X1234567", "driving licence
# MORGA657054SM9IJ", "national ID 8001015009087"): letters, digits and dashes holding at least 4 digits,
# not a date.
ID_NUMBER = (
    r"(?<![\w-])(?!\d{4}-\d{1,2}-\d{1,2}(?![\w-]))(?=(?:[A-Za-z-]*\d){4})"
    r"[A-Za-z0-9][A-Za-z0-9-]{4,22}[A-Za-z0-9](?![\w-])"
)
ID_WORDS = _words(
    "passport licence license national identity nino cnic aadhaar dni"
    " 护照 身份证 驾照 驾驶证 護照 身分證 パスポート 旅券 免許 マイナンバー 여권 주민등록 운전면허"
)
# The UK's National Insurance number ("AB 12 34 56 C"): its letters rule out most words and codes.
UK_NINO = (
    r"(?<![\w-])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w-])"
)
# India's Aadhaar number: 12 digits in groups of four, the first 2–9 (its Verhoeff check digit decides).
AADHAAR = r"(?<![\w.-])[2-9]\d{3}[ -]?\d{4}[ -]?\d{4}(?![\w-]|\.\d)"
# Words that say a number near an ID word is something else ("license … build 20240115", "error 4010123").
NOT_ID_WORDS = _words(
    "order invoice ticket build version release error errors status code port line page row sku tracking"
    " speed holiday"
)
