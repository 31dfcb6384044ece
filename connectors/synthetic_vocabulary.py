"""The vocabulary the fake source data is drawn from: schemas, names, places, weights.

Kept apart from the generator (:mod:`connectors.synthetic`) so that what the data looks like
(districts and their weights, surnames, brands, rates) can be read and changed in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from connectors.base import FieldType

__all__ = [
    "BIRTH_REGIONS",
    "BRANDS",
    "BRAND_CHARS",
    "BRAND_TABLE",
    "CAPITAL_ROUND",
    "DISTRICTS",
    "DISTRICT_TABLE",
    "ENTERPRISE_STATUS_TABLE",
    "FORM_TABLE",
    "GIVEN_ANY",
    "GIVEN_FEMALE",
    "GIVEN_MALE",
    "INDUSTRIES",
    "INDUSTRY_TABLE",
    "INSURANCE_RATES",
    "INSURANCE_TAKEN",
    "KEY_FIELDS",
    "MOBILE_PREFIXES",
    "PLATE_LETTERS",
    "SCHEMAS",
    "STREETS",
    "SUBJECT_FIELDS",
    "SURNAME_TABLE",
    "VEHICLE_STATUS_TABLE",
    "VEHICLE_TYPE_TABLE",
    "VIN_YEAR",
    "weighted_table",
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
BIRTH_REGIONS: dict[str, int] = {code: weight * 4 for code, weight in DISTRICTS.values()} | {
    "430202": 20,
    "430302": 20,
    "430407": 15,
    "430602": 15,
    "430702": 10,
    "431002": 10,
    "430502": 10,
}

STREETS: dict[str, tuple[str, ...]] = {
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
GIVEN_MALE = "伟强磊军洋勇杰涛明超刚平辉鹏华飞斌宇浩凯健俊帆峰建国志文博亮成林"

GIVEN_FEMALE = "芳娜敏静丽艳娟霞秀玲婷雪琳颖倩慧晶欣悦佳怡婉露瑶梅兰萍红燕琴妍"

GIVEN_ANY = "子思雨晨一欣嘉梓佳宇安然可心诗语天泽星辰"


#: GB/T 4754-2017 sections with sampling weights and matching company-name words.
INDUSTRIES: dict[str, tuple[int, tuple[str, ...]]] = {
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

BRAND_CHARS = "星河华瑞信达恒通鑫盛宏远博嘉泰安德锦天卓新源聚创联汇中海金科云麓湘楚岳辰晟睿航"

_COMPANY_FORMS = {"有限公司": 70, "有限责任公司": 22, "股份有限公司": 8}

_ENTERPRISE_STATUS = {"存续": 58, "在业": 27, "注销": 10, "吊销": 5}

CAPITAL_ROUND = tuple(
    Decimal(n).quantize(Decimal("0.01"))
    for n in (10, 20, 30, 50, 100, 100, 200, 300, 500, 500, 1000, 2000, 5000)
)


#: Mainland mobile prefixes in common use.
MOBILE_PREFIXES = tuple(
    str(p) for p in (*range(130, 140), 147, *range(150, 154), *range(155, 160), 166, 173,
                     *range(176, 179), *range(180, 190), 191, 198, 199)
)  # fmt: skip


#: Brand -> (VIN world manufacturer identifier, share of new-energy vehicles, weight).
BRANDS: dict[str, tuple[str, float, int]] = {
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

PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I or O on plates


#: ISO 3779 model-year codes.
VIN_YEAR = {y: c for y, c in zip(range(2001, 2031), "123456789ABCDEFGHJKLMNPRSTVWXY", strict=True)}

INSURANCE_RATES = {  # employer + employee share of the base
    "养老": Decimal("0.24"),
    "医疗": Decimal("0.10"),
    "失业": Decimal("0.01"),
    "工伤": Decimal("0.005"),
    "生育": Decimal("0.007"),
}

INSURANCE_TAKEN = {"养老": 1.0, "医疗": 1.0, "失业": 0.9, "工伤": 0.85, "生育": 0.7}


def weighted_table(weights: Mapping[str, int]) -> tuple[str, ...]:
    """Expand weights into a lookup tuple, so a weighted draw is one index operation."""
    out: list[str] = []
    for value, weight in weights.items():
        out.extend([value] * weight)
    return tuple(out)


DISTRICT_TABLE = weighted_table({d: w for d, (_code, w) in DISTRICTS.items()})

SURNAME_TABLE = weighted_table(_SURNAMES)

INDUSTRY_TABLE = weighted_table({k: w for k, (w, _words) in INDUSTRIES.items()})

FORM_TABLE = weighted_table(_COMPANY_FORMS)

ENTERPRISE_STATUS_TABLE = weighted_table(_ENTERPRISE_STATUS)

BRAND_TABLE = weighted_table({k: w for k, (_wmi, _nev, w) in BRANDS.items()})

VEHICLE_TYPE_TABLE = weighted_table(_VEHICLE_TYPES)

VEHICLE_STATUS_TABLE = weighted_table(_VEHICLE_STATUS)
