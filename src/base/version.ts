/** weft's version, printed by `weft version` and exported as weft_build_info. */
export const VERSION = "0.1.0";
