"""Privacy controls applied to data before it leaves the gateway."""

from gateway.privacy.masking import MaskRule, mask, parse_mask_rule

__all__ = ["MaskRule", "mask", "parse_mask_rule"]
