"""Deterministic, realistic-looking, entirely fake source data for development and demos.

Three datasets of a Changsha (长沙) data space: the enterprise registry (``enterprises``),
motor-vehicle registrations (``vehicles``) and monthly social-insurance contributions
(``social_insurance``). Identifiers carry correct check characters (credit codes, resident
identity numbers, VINs) and mobile numbers have real prefixes, so the data exercises the
same validation paths as production data; no value belongs to a real person or company.

Determinism: the same ``(dataset, rows, seed)`` always yields the same rows, and a run with
fewer rows yields a prefix of a longer one (for ``social_insurance``, with the same
``employers``). Enterprise ``i``'s credit code and district depend only on ``(seed, i)``
(:func:`enterprise_identity`), which is how ``social_insurance`` draws its
``employer_credit_code`` from ``generate("enterprises", n, seed)`` without generating it:
every employer is one of the first ``employers`` enterprises of the same seed (default
``rows // 3``; :func:`write_sqlite` passes the number of enterprises it writes), so the two
tables join, and an insured person's ``district`` is their employer's.

Small cells on purpose: district weights make 望城区 rare (about 1 % of enterprises,
vehicles and insured persons), while the large districts have 12-18 % each. At a few
hundred rows, a ``GROUP BY district`` therefore yields groups both above and below 10
distinct subjects, which is what the gateway's small-cell suppression needs to be seen
working. At large sizes every district passes the threshold.

Speed: generation is a single streaming pass over precomputed tables and partial check
sums; on a modest CPU, CPython makes about 55k enterprise rows/s, 100k vehicle rows/s and
600k social-insurance rows/s, and memory does not grow with ``rows`` (a million-row
``write_sqlite`` stays near 60 MB).
"""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from itertools import islice
from pathlib import Path
from random import Random

from connectors.base import FieldType, Row
from gateway.identifiers import (
    RESIDENT_ID_WEIGHTS,
    USCC_ALPHABET,
    USCC_WEIGHTS,
    VIN_ALPHABET,
    VIN_VALUES,
    VIN_WEIGHTS,
)

__all__ = [
    "DISTRICTS",
    "KEY_FIELDS",
    "SCHEMAS",
    "SUBJECT_FIELDS",
    "enterprise_identity",
    "generate",
    "write_csv",
    "write_sqlite",
]

SCHEMAS: dict[str, dict[str, FieldType]] = {
    "enterprises": {
        "credit_code": "string",
        "name": "string",
        "legal_rep_name": "string",
        "legal_rep_id": "string",
        "legal_rep_mobile": "string",
        "registered_capital": "decimal",  # 万元 (10,000 yuan), two decimal places
        "established": "date",
        "district": "string",
        "industry": "string",
        "status": "string",
        "address": "string",
    },
    "vehicles": {
        "plate": "string",
        "vin": "string",
        "owner_name": "string",
        "owner_id": "string",
        "vehicle_type": "string",
        "brand": "string",
        "registered": "date",
        "district": "string",
        "status": "string",
    },
    "social_insurance": {
        "record_id": "integer",
        "person_id": "string",
        "person_name": "string",
        "employer_credit_code": "string",
        "month": "date",  # first day of the contribution month
        "insurance_type": "string",
        "base": "decimal",  # monthly contribution base, yuan
        "amount": "decimal",  # employer + employee contribution, yuan
        "district": "string",
    },
}
SUBJECT_FIELDS: dict[str, str] = {
    "enterprises": "credit_code",
    "vehicles": "owner_id",
    "social_insurance": "person_id",
}
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "enterprises": ("credit_code",),
    "vehicles": ("vin",),
    "social_insurance": ("record_id",),
}

# --- reference tables -------------------------------------------------------------------

#: Changsha's districts and counties with their GB/T 2260 codes and sampling weights
#: (per cent). 望城区 is deliberately rare; see the module docstring.
DISTRICTS: dict[str, tuple[str, int]] = {
    "芙蓉区": ("430102", 14),
    "天心区": ("430103", 13),
    "岳麓区": ("430104", 18),
    "开福区": ("430105", 12),
    "雨花区": ("430111", 17),
    "望城区": ("430112", 1),
    "长沙县": ("430121", 12),
    "浏阳市": ("430181", 7),
    "宁乡市": ("430182", 6),
}
#: Birthplace codes for resident identity numbers: mostly Changsha, some elsewhere in
#: Hunan (株洲, 湘潭, 衡阳, 岳阳, 常德, 郴州, 邵阳).
_BIRTH_REGIONS: dict[str, int] = {code: weight * 4 for code, weight in DISTRICTS.values()} | {
    "430202": 20,
    "430302": 20,
    "430407": 15,
    "430602": 15,
    "430702": 10,
    "431002": 10,
    "430502": 10,
}
_STREETS: dict[str, tuple[str, ...]] = {
    "芙蓉区": ("五一大道", "芙蓉中路", "解放西路", "韶山北路", "八一路", "蔡锷中路"),
    "天心区": ("书院路", "劳动西路", "芙蓉南路", "湘府中路", "友谊路", "天心路"),
    "岳麓区": ("麓山南路", "枫林三路", "金星中路", "麓谷大道", "桐梓坡路", "岳麓大道"),
    "开福区": ("湘江中路", "芙蓉北路", "三一大道", "湘雅路", "营盘路", "中山路"),
    "雨花区": ("韶山中路", "万家丽中路", "劳动东路", "曙光中路", "香樟路", "东塘路"),
    "望城区": ("雷锋大道", "郭亮中路", "金星北路", "普瑞大道", "旺旺路"),
    "长沙县": ("星沙大道", "开元东路", "漓湘路", "板仓路", "东八线"),
    "浏阳市": ("金沙路", "白沙路", "北正路", "集里路", "浏阳大道"),
    "宁乡市": ("玉潭中路", "花明路", "金洲大道", "一环路", "新康路"),
}
#: Common surnames with rough relative frequencies.
# fmt: off
_SURNAMES: dict[str, int] = {
    "王": 72, "李": 71, "张": 68, "刘": 54, "陈": 48, "杨": 33, "黄": 25, "赵": 21,
    "吴": 20, "周": 19, "徐": 17, "孙": 15, "马": 14, "朱": 13, "胡": 13, "郭": 12,
    "何": 12, "高": 11, "林": 11, "罗": 11, "郑": 10, "梁": 9, "谢": 9, "宋": 8,
    "唐": 8, "许": 7, "韩": 7, "冯": 7, "邓": 7, "曹": 7, "彭": 7, "曾": 6, "肖": 6,
    "田": 6, "董": 5, "袁": 5, "潘": 5, "蒋": 5, "蔡": 5, "余": 5, "杜": 5, "叶": 5,
    "程": 5, "苏": 4, "魏": 4, "吕": 4, "丁": 4, "任": 4, "沈": 4, "姚": 4, "卢": 4,
    "谭": 4, "廖": 3, "贺": 3, "龙": 3, "易": 3, "欧阳": 1, "司马": 1,
}
# fmt: on
_GIVEN_MALE = "伟强磊军洋勇杰涛明超刚平辉鹏华飞斌宇浩凯健俊帆峰建国志文博亮成林"
_GIVEN_FEMALE = "芳娜敏静丽艳娟霞秀玲婷雪琳颖倩慧晶欣悦佳怡婉露瑶梅兰萍红燕琴妍"
_GIVEN_ANY = "子思雨晨一欣嘉梓佳宇安然可心诗语天泽星辰"
#: GB/T 4754-2017 sections with sampling weights and matching company-name words.
_INDUSTRIES: dict[str, tuple[int, tuple[str, ...]]] = {
    "批发和零售业": (22, ("商贸", "贸易", "百货", "医药连锁", "电子商务")),
    "租赁和商务服务业": (12, ("企业管理咨询", "广告传媒", "人力资源服务", "会展服务")),
    "信息传输、软件和信息技术服务业": (10, ("信息技术", "网络科技", "软件开发", "智能科技")),
    "科学研究和技术服务业": (9, ("检测技术", "生物科技", "工程设计", "环保科技")),
    "制造业": (9, ("机械制造", "电子设备", "新材料", "精密制造", "食品")),
    "建筑业": (8, ("建筑工程", "建设工程", "装饰工程", "市政工程")),
    "住宿和餐饮业": (6, ("餐饮管理", "酒店管理", "餐饮服务")),
    "交通运输、仓储和邮政业": (5, ("物流", "运输", "供应链管理")),
    "居民服务、修理和其他服务业": (5, ("家政服务", "汽车维修", "保洁服务")),
    "房地产业": (4, ("房地产开发", "置业", "物业管理")),
    "文化、体育和娱乐业": (4, ("文化传媒", "影视", "体育发展")),
    "农、林、牧、渔业": (2, ("农业开发", "生态农业", "农业科技")),
    "教育": (2, ("教育科技", "教育咨询")),
    "金融业": (1, ("融资担保", "投资管理")),
    "电力、热力、燃气及水生产和供应业": (1, ("新能源", "燃气", "电力工程")),
}
_BRAND_CHARS = "星河华瑞信达恒通鑫盛宏远博嘉泰安德锦天卓新源聚创联汇中海金科云麓湘楚岳辰晟睿航"
_COMPANY_FORMS = {"有限公司": 70, "有限责任公司": 22, "股份有限公司": 8}
_ENTERPRISE_STATUS = {"存续": 58, "在业": 27, "注销": 10, "吊销": 5}
_CAPITAL_ROUND = tuple(
    Decimal(n).quantize(Decimal("0.01"))
    for n in (10, 20, 30, 50, 100, 100, 200, 300, 500, 500, 1000, 2000, 5000)
)
#: Mainland mobile prefixes in common use.
_MOBILE_PREFIXES = tuple(
    str(p) for p in (*range(130, 140), 147, *range(150, 154), *range(155, 160), 166, 173,
                     *range(176, 179), *range(180, 190), 191, 198, 199)
)  # fmt: skip
#: Brand -> (VIN world manufacturer identifier, share of new-energy vehicles, weight).
_BRANDS: dict[str, tuple[str, float, int]] = {
    "比亚迪": ("LGX", 0.95, 16),
    "大众": ("LSV", 0.05, 14),
    "丰田": ("LVG", 0.05, 10),
    "本田": ("LHG", 0.05, 8),
    "吉利": ("L6T", 0.40, 8),
    "长安": ("LS5", 0.30, 7),
    "哈弗": ("LGW", 0.10, 5),
    "日产": ("LGB", 0.05, 5),
    "别克": ("LSG", 0.05, 5),
    "五菱": ("LZW", 0.60, 6),
    "特斯拉": ("LRW", 1.0, 4),
    "奇瑞": ("LVV", 0.20, 4),
    "广汽传祺": ("LMG", 0.20, 3),
    "蔚来": ("LJ1", 1.0, 2),
    "理想": ("LW4", 1.0, 3),
}
_VEHICLE_TYPES = {
    "小型轿车": 50,
    "小型普通客车": 22,
    "小型越野客车": 12,
    "轻型厢式货车": 5,
    "轻型普通货车": 4,
    "中型普通客车": 2,
    "大型普通客车": 2,
    "重型半挂牵引车": 2,
    "重型厢式货车": 1,
}
_VEHICLE_STATUS = {
    "正常": 82,
    "逾期未检验": 6,
    "违法未处理": 4,
    "转出": 3,
    "注销": 3,
    "达到报废标准": 1,
    "查封": 1,
}
_PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I or O on plates
#: ISO 3779 model-year codes.
_VIN_YEAR = {y: c for y, c in zip(range(2001, 2031), "123456789ABCDEFGHJKLMNPRSTVWXY", strict=True)}
_INSURANCE_RATES = {  # employer + employee share of the base
    "养老": Decimal("0.24"),
    "医疗": Decimal("0.10"),
    "失业": Decimal("0.01"),
    "工伤": Decimal("0.005"),
    "生育": Decimal("0.007"),
}
_INSURANCE_TAKEN = {"养老": 1.0, "医疗": 1.0, "失业": 0.9, "工伤": 0.85, "生育": 0.7}
_CENT = Decimal("0.01")
_MASK = (1 << 64) - 1
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)  # GB 11714 organization code
_ORG_MULTIPLIER = 73_939_133  # coprime with 10**8, so i -> i * M + c is a bijection
_VIN_SERIAL_MULTIPLIER = 482_711  # coprime with 10**6
_VIN_PLANTS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def _table(weights: Mapping[str, int]) -> tuple[str, ...]:
    """Expand weights into a lookup tuple, so a weighted draw is one index operation."""
    out: list[str] = []
    for value, weight in weights.items():
        out.extend([value] * weight)
    return tuple(out)


_DISTRICT_TABLE = _table({d: w for d, (_code, w) in DISTRICTS.items()})
_SURNAME_TABLE = _table(_SURNAMES)
_INDUSTRY_TABLE = _table({k: w for k, (w, _words) in _INDUSTRIES.items()})
_FORM_TABLE = _table(_COMPANY_FORMS)
_ENTERPRISE_STATUS_TABLE = _table(_ENTERPRISE_STATUS)
_BRAND_TABLE = _table({k: w for k, (_wmi, _nev, w) in _BRANDS.items()})
_VEHICLE_TYPE_TABLE = _table(_VEHICLE_TYPES)
_VEHICLE_STATUS_TABLE = _table(_VEHICLE_STATUS)
_USCC_VALUE = {ch: i for i, ch in enumerate(USCC_ALPHABET)}


def _mix(x: int) -> int:
    """SplitMix64 finaliser: a cheap, well-spread hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _seed_key(seed: int, salt: int) -> int:
    return _mix((seed & _MASK) ^ salt)


def _dates(start: dt.date, end: dt.date) -> tuple[dt.date, ...]:
    first = start.toordinal()
    return tuple(dt.date.fromordinal(o) for o in range(first, end.toordinal() + 1))


def _draw_date(r: Callable[[], float], dates: Sequence[dt.date], skew: float) -> dt.date:
    """One of ``dates``; ``skew`` < 1 leans towards the end (more recent)."""
    return dates[int(len(dates) * r() ** skew)]


# --- identifiers with precomputed partial check sums ------------------------------------
# Check characters are weighted digit sums. Summing the parts of an identifier from tables
# built once (rather than walking every character) is what makes a million rows fast.


def _digit_sums(width: int, weights: Sequence[int]) -> tuple[int, ...]:
    """Weighted digit sum of every ``width``-digit number (leading zeros included)."""
    sums = [0]
    for k in range(width):
        sums = [prev + d * weights[k] for prev in sums for d in range(10)]
    return tuple(sums)


_RESIDENT_CHECK = "10X98765432"
_RID_YEAR = _digit_sums(4, RESIDENT_ID_WEIGHTS[6:10])
_RID_MONTH_DAY = _digit_sums(4, RESIDENT_ID_WEIGHTS[10:14])
_RID_SEQ = _digit_sums(3, RESIDENT_ID_WEIGHTS[14:17])
#: Birth regions as drawn: each with its share of the identity-number check sum.
_BIRTH_REGION_TABLE = tuple(
    (code, sum(int(c) * w for c, w in zip(code, RESIDENT_ID_WEIGHTS, strict=False)))
    for code in _table(_BIRTH_REGIONS)
)
_ORG_HI = _digit_sums(4, _ORG_WEIGHTS[:4])
_ORG_LO = _digit_sums(4, _ORG_WEIGHTS[4:])
_USCC_HI = _digit_sums(4, USCC_WEIGHTS[8:12])
_USCC_LO = _digit_sums(4, USCC_WEIGHTS[12:16])
#: GB 11714 check character for each organization-code sum modulo 11.
_ORG_CHECK = tuple("0" if k == 0 else "X" if k == 1 else str(11 - k) for k in range(11))
_USCC_PREFIX = {
    code: sum(_USCC_VALUE[c] * w for c, w in zip("91" + code, USCC_WEIGHTS, strict=False))
    for code, _w in DISTRICTS.values()
}
_VIN_SERIAL_HI = _digit_sums(3, VIN_WEIGHTS[11:14])
_VIN_SERIAL_LO = _digit_sums(3, VIN_WEIGHTS[14:17])


class _People:
    """Draws fake people: a name whose gender matches the sequence digit of a valid
    resident identity number born between ``year_from`` and ``year_to``."""

    def __init__(self, rng: Random, year_from: int, year_to: int) -> None:
        self._random = rng.random
        # Each birth date as its 8 ID digits and their share of the check sum.
        self._births = tuple(
            (
                f"{d.year}{d.month:02d}{d.day:02d}",
                _RID_YEAR[d.year] + _RID_MONTH_DAY[d.month * 100 + d.day],
            )
            for d in _dates(dt.date(year_from, 1, 1), dt.date(year_to, 12, 31))
        )

    def draw(self) -> tuple[str, str]:
        """``(name, resident_id)``."""
        r = self._random
        region, region_sum = _BIRTH_REGION_TABLE[int(r() * len(_BIRTH_REGION_TABLE))]
        birth, birth_sum = self._births[int(r() * len(self._births))]
        seq = int(r() * 1000)
        check = _RESIDENT_CHECK[(region_sum + birth_sum + _RID_SEQ[seq]) % 11]
        pool = _GIVEN_MALE if seq % 2 else _GIVEN_FEMALE  # odd sequence number: male
        given = pool[int(r() * len(pool))]
        if r() < 0.75:  # most given names have two characters
            second = _GIVEN_ANY if r() < 0.3 else pool
            given = second[int(r() * len(second))] + given
        surname = _SURNAME_TABLE[int(r() * len(_SURNAME_TABLE))]
        return surname + given, f"{region}{birth}{seq:03d}{check}"


def _mobile(r: Callable[[], float]) -> str:
    return _MOBILE_PREFIXES[int(r() * len(_MOBILE_PREFIXES))] + f"{int(r() * 1e8):08d}"


def _identity(key: int, index: int) -> tuple[str, str]:
    district = _DISTRICT_TABLE[_mix(key ^ index) % len(_DISTRICT_TABLE)]
    region = DISTRICTS[district][0]
    # An affine map with a multiplier coprime to 10**8 is a bijection on 0..10**8-1.
    hi, lo = divmod((index * _ORG_MULTIPLIER + key) % 10**8, 10_000)
    org_check = _ORG_CHECK[(_ORG_HI[hi] + _ORG_LO[lo]) % 11]
    total = _USCC_PREFIX[region] + _USCC_HI[hi] + _USCC_LO[lo]
    total += _USCC_VALUE[org_check] * USCC_WEIGHTS[16]
    check = USCC_ALPHABET[-total % 31]
    return f"91{region}{hi:04d}{lo:04d}{org_check}{check}", district


_IDENTITY_SALT = 0xE17E


def enterprise_identity(seed: int, index: int) -> tuple[str, str]:
    """``(credit_code, district)`` of enterprise ``index`` (0-based) generated with ``seed``.

    A pure function of its arguments, so other datasets can refer to enterprises without
    generating them. Credit codes are unique for ``index < 10**8``; their organization-code
    part (characters 9-17) carries a correct GB 11714 check character too.
    """
    return _identity(_seed_key(seed, _IDENTITY_SALT), index)


# --- the datasets -----------------------------------------------------------------------


def _enterprises(rows: int, seed: int) -> Iterator[Row]:
    if rows > 10**8:
        raise ValueError("enterprises: at most 10**8 rows have unique credit codes")
    rng = Random(f"dsgw-synthetic:enterprises:{seed}")  # noqa: S311 - fake data, not secrets
    r = rng.random
    people = _People(rng, 1955, 2000)
    founded = _dates(dt.date(1998, 1, 1), dt.date(2024, 12, 31))
    key = _seed_key(seed, _IDENTITY_SALT)
    brand_chars = len(_BRAND_CHARS)
    for i in range(rows):
        credit_code, district = _identity(key, i)
        industry = _INDUSTRY_TABLE[int(r() * len(_INDUSTRY_TABLE))]
        words = _INDUSTRIES[industry][1]
        pair = int(r() * brand_chars * brand_chars)
        brand = _BRAND_CHARS[pair // brand_chars] + _BRAND_CHARS[pair % brand_chars]
        place = r()
        if place < 0.6:
            prefix = "长沙"
        elif place < 0.85:
            prefix = "湖南"
        else:  # a district-level name: 长沙市岳麓区…, or 浏阳市… for a county-level city
            prefix = district if district[-1] in "县市" else "长沙市" + district
        rep_name, rep_id = people.draw()
        if r() < 0.55:  # round amounts are the most common registered capital
            capital = _CAPITAL_ROUND[int(r() * len(_CAPITAL_ROUND))]
        else:  # 10.00 .. about 316,000.00 万元, log-uniform
            capital = Decimal(int(10 ** (3 + r() * 4.5))).scaleb(-2)
        streets = _STREETS[district]
        address = f"湖南省长沙市{district}{streets[int(r() * len(streets))]}{1 + int(r() * 899)}号"
        if r() < 0.4:
            address += f"{1 + int(r() * 20)}栋{1 + int(r() * 30)}{1 + int(r() * 20):02d}室"
        yield {
            "credit_code": credit_code,
            "name": prefix
            + brand
            + words[int(r() * len(words))]
            + _FORM_TABLE[int(r() * len(_FORM_TABLE))],
            "legal_rep_name": rep_name,
            "legal_rep_id": rep_id,
            "legal_rep_mobile": _mobile(r),
            "registered_capital": capital,
            "established": _draw_date(r, founded, 0.6),
            "district": district,
            "industry": industry,
            "status": _ENTERPRISE_STATUS_TABLE[int(r() * len(_ENTERPRISE_STATUS_TABLE))],
            "address": address,
        }


def _models() -> dict[str, tuple[tuple[str, int], ...]]:
    """Per brand, a few vehicle-descriptor sections (VIN characters 4-8, the model) with
    the weighted sum of the world manufacturer code and those characters."""
    rng = Random("dsgw-synthetic:vin-models")  # noqa: S311 - fake data, not secrets
    out: dict[str, tuple[tuple[str, int], ...]] = {}
    for brand, (wmi, _nev, _w) in _BRANDS.items():
        models = []
        for _ in range(6):
            vds = "".join(rng.choice(VIN_ALPHABET) for _ in range(5))
            head = wmi + vds
            models.append(
                (head, sum(VIN_VALUES[c] * w for c, w in zip(head, VIN_WEIGHTS, strict=False)))
            )
        out[brand] = tuple(models)
    return out


_MODELS = _models()


def _plate(r: Callable[[], float], new_energy: bool) -> str:
    """A Changsha (湘A) plate: new-energy D (battery) or F (hybrid) and five digits, or
    five characters with up to two letters."""
    if new_energy:
        return ("湘AD" if r() < 0.8 else "湘AF") + f"{int(r() * 100_000):05d}"
    number = f"{int(r() * 100_000):05d}"
    shape = r()
    if shape < 0.35:
        return "湘A" + number
    letter = _PLATE_LETTERS[int(r() * len(_PLATE_LETTERS))]
    if shape < 0.7:
        return "湘A" + letter + number[1:]
    if shape < 0.85:
        return "湘A" + number[1:] + letter
    return "湘A" + letter + _PLATE_LETTERS[int(r() * len(_PLATE_LETTERS))] + number[2:]


def _vehicles(rows: int, seed: int) -> Iterator[Row]:
    if rows > 10**6 * len(_VIN_PLANTS):
        raise ValueError(f"vehicles: at most {10**6 * len(_VIN_PLANTS)} rows have unique VINs")
    rng = Random(f"dsgw-synthetic:vehicles:{seed}")  # noqa: S311 - fake data, not secrets
    r = rng.random
    people = _People(rng, 1955, 2004)
    offset = _seed_key(seed, 0x7E1) % 10**6
    registrations = _dates(dt.date(2008, 1, 1), dt.date(2024, 12, 31))
    for i in range(rows):
        brand = _BRAND_TABLE[int(r() * len(_BRAND_TABLE))]
        nev_share = _BRANDS[brand][1]
        models = _MODELS[brand]
        head, head_sum = models[int(r() * len(models))]
        registered = _draw_date(r, registrations, 0.7)
        year = _VIN_YEAR[registered.year - (r() < 0.2)]  # model year: this or last year
        # Serial and plant encode i, so VINs are unique whatever the random parts are.
        serial = (i % 10**6 * _VIN_SERIAL_MULTIPLIER + offset) % 10**6
        plant = _VIN_PLANTS[i // 10**6]
        total = head_sum + VIN_VALUES[year] * 9 + VIN_VALUES[plant] * 8
        total += _VIN_SERIAL_HI[serial // 1000] + _VIN_SERIAL_LO[serial % 1000]
        check = total % 11
        vehicle_type = _VEHICLE_TYPE_TABLE[int(r() * len(_VEHICLE_TYPE_TABLE))]
        new_energy = vehicle_type[:2] == "小型" and r() < nev_share
        owner_name, owner_id = people.draw()
        yield {
            "plate": _plate(r, new_energy),
            "vin": f"{head}{'X' if check == 10 else check}{year}{plant}{serial:06d}",
            "owner_name": owner_name,
            "owner_id": owner_id,
            "vehicle_type": vehicle_type,
            "brand": brand,
            "registered": registered,
            "district": _DISTRICT_TABLE[int(r() * len(_DISTRICT_TABLE))],
            "status": _VEHICLE_STATUS_TABLE[int(r() * len(_VEHICLE_STATUS_TABLE))],
        }


_MONTHS = tuple(dt.date(2023 + m // 12, m % 12 + 1, 1) for m in range(24))


def _social_insurance(rows: int, seed: int, employers: int) -> Iterator[Row]:
    """Insured people, each with one employer, one to four consecutive months (2023-2024)
    and the insurance types their employer pays; one row per person, month and type."""
    rng = Random(f"dsgw-synthetic:social_insurance:{seed}")  # noqa: S311 - fake data
    r = rng.random
    people = _People(rng, 1962, 2004)
    key = _seed_key(seed, _IDENTITY_SALT)
    record_id = 0
    while record_id < rows:
        name, person_id = people.draw()
        employer, district = _identity(key, int(r() * employers))
        base = Decimal(400_000 + int(r() * 1_800_000)).scaleb(-2)  # 4,000-22,000 yuan
        amounts = [
            (kind, (base * rate).quantize(_CENT))
            for kind, rate in _INSURANCE_RATES.items()
            if r() < _INSURANCE_TAKEN[kind]
        ]
        start = int(r() * len(_MONTHS))
        for month in _MONTHS[start : start + 1 + int(r() * 4)]:
            for kind, amount in amounts:
                record_id += 1
                yield {
                    "record_id": record_id,
                    "person_id": person_id,
                    "person_name": name,
                    "employer_credit_code": employer,
                    "month": month,
                    "insurance_type": kind,
                    "base": base,
                    "amount": amount,
                    "district": district,
                }


def generate(
    dataset: str, rows: int, seed: int = 0, *, employers: int | None = None
) -> Iterator[Row]:
    """Stream ``rows`` rows of ``dataset`` (a key of :data:`SCHEMAS`), in column order.

    ``employers`` (``social_insurance`` only) is how many enterprises of the same seed the
    employer codes are drawn from; default ``max(1, rows // 3)``.
    Raises ``ValueError`` for an unknown dataset or a bad count.
    """
    if dataset not in SCHEMAS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(SCHEMAS)}")
    if rows < 0:
        raise ValueError("rows must not be negative")
    if dataset == "enterprises":
        return _enterprises(rows, seed)
    if dataset == "vehicles":
        return _vehicles(rows, seed)
    pool = max(1, rows // 3) if employers is None else employers
    if not 1 <= pool <= 10**8:
        raise ValueError("employers must be between 1 and 10**8")
    return islice(_social_insurance(rows, seed, pool), rows)


# --- writers ----------------------------------------------------------------------------

_SQLITE_TYPES: dict[FieldType, str] = {
    "string": "TEXT",
    "integer": "INTEGER",
    "decimal": "NUMERIC",
    "date": "DATE",
    "boolean": "BOOLEAN",
}


def _decimal_text(value: object) -> str:
    assert isinstance(value, Decimal)
    return format(value, "f")


def _date_text(value: object) -> str:
    assert isinstance(value, dt.date)
    return value.isoformat()


def _bool_text(value: object) -> str:
    return "true" if value else "false"


def _rows_as(
    dataset: str, source: Iterator[Row], converters: Mapping[FieldType, Callable[[object], object]]
) -> Iterator[list[object]]:
    """Rows as lists, with values of the types in ``converters`` converted (nulls kept).
    Only the few columns that need it are touched, which keeps writing fast."""
    special = [
        (i, converters[t]) for i, t in enumerate(SCHEMAS[dataset].values()) if t in converters
    ]
    for row in source:
        values: list[object] = list(row.values())
        for i, convert in special:
            if values[i] is not None:
                values[i] = convert(values[i])
        yield values


#: SQLite adapts str, int and bool (as 0/1) itself.
_SQLITE_CONVERT: dict[FieldType, Callable[[object], object]] = {
    "decimal": _decimal_text,
    "date": _date_text,
}
#: csv writes None as an empty cell and str/int as they are.
_CSV_CONVERT: dict[FieldType, Callable[[object], object]] = {
    "decimal": _decimal_text,
    "date": _date_text,
    "boolean": _bool_text,
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def write_sqlite(
    path: Path, datasets: Mapping[str, int], seed: int = 0, *, batch: int = 10_000
) -> None:
    """Write each ``{dataset: rows}`` to a table of that name in the SQLite file ``path``.

    Existing tables of those names are replaced. Columns get the declared types (decimals
    as ``NUMERIC``, dates as ISO text); indexes cover the key (unique), ``district`` and the
    subject field. Each batch of rows is one transaction. When ``enterprises`` is among the
    datasets, ``social_insurance`` employers are drawn from exactly those enterprises.
    """
    unknown = [name for name in datasets if name not in SCHEMAS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {', '.join(SCHEMAS)}")
    conn = sqlite3.connect(path)
    try:
        for name, rows in datasets.items():
            schema = SCHEMAS[name]
            table = _quote(name)
            columns = ", ".join(f"{_quote(f)} {_SQLITE_TYPES[t]}" for f, t in schema.items())
            with conn:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute(f"CREATE TABLE {table} ({columns})")
            insert = f"INSERT INTO {table} VALUES ({', '.join('?' for _ in schema)})"  # noqa: S608
            employers = datasets.get("enterprises") if name == "social_insurance" else None
            source = generate(name, rows, seed, employers=employers or None)
            values = _rows_as(name, source, _SQLITE_CONVERT)
            while chunk := list(islice(values, batch)):
                with conn:
                    conn.executemany(insert, chunk)
            indexed: Sequence[str] = (*KEY_FIELDS[name], "district", SUBJECT_FIELDS[name])
            with conn:
                for i, field in enumerate(dict.fromkeys(indexed)):
                    unique = "UNIQUE " if i == 0 and len(KEY_FIELDS[name]) == 1 else ""
                    conn.execute(
                        f"CREATE {unique}INDEX {_quote(f'{name}_{field}')} "
                        f"ON {table} ({_quote(field)})"
                    )
    finally:
        conn.close()


def write_csv(path: Path, dataset: str, rows: int, seed: int = 0) -> None:
    """Write ``rows`` rows of ``dataset`` to a UTF-8 CSV file with a header row; empty
    cells are nulls, decimals are plain notation, dates ISO."""
    source = generate(dataset, rows, seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SCHEMAS[dataset])
        writer.writerows(_rows_as(dataset, source, _CSV_CONVERT))
