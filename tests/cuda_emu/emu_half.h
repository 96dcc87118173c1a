// float16 and bfloat16 storage types for the emulator's instantiations of the
// kernels' 16-bit paths (c10::Half / c10::BFloat16 on the device). Like
// those, arithmetic happens in float (the kernels' acc_t): these only convert,
// with round-to-nearest-even as the device's __float2half_rn and
// __float2bfloat16_rn, subnormals, inf and NaN included.
#pragma once

#include <cstdint>
#include <cstring>

namespace emu {

struct Half {
  uint16_t bits;
  Half() = default;
  Half(float f) : bits(from_float(f)) {}  // NOLINT: implicit, as c10::Half
  operator float() const {                // NOLINT
    const uint32_t sign = uint32_t(bits & 0x8000u) << 16, exp = (bits >> 10) & 0x1fu, mant = bits & 0x3ffu;
    if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
      const float v = float(mant) * 0x1p-24f;
      return sign ? -v : v;
    }
    const uint32_t x = sign | (exp == 0x1f ? 0x7f800000u | (mant << 13) : ((exp + 112) << 23) | (mant << 13));
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
  static uint16_t from_float(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u, mant = x & 0x7fffffu;
    const int exp = int((x >> 23) & 0xffu);
    if (exp == 0xff) return uint16_t(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));  // inf, quiet NaN
    const int e = exp - 112;                                                                  // half exponent
    if (e >= 0x1f) return uint16_t(sign | 0x7c00u);                                          // overflow: inf
    if (e <= 0) {  // a half subnormal (or zero): round (mant | hidden bit) >> (14 - e)
      if (e < -10) return uint16_t(sign);
      const uint32_t full = mant | 0x800000u;
      const int shift = 14 - e;
      uint32_t m = full >> shift;
      const uint32_t rem = full & ((1u << shift) - 1), halfway = 1u << (shift - 1);
      if (rem > halfway || (rem == halfway && (m & 1u))) ++m;
      return uint16_t(sign | m);
    }
    uint32_t h = (uint32_t(e) << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry may reach the exponent (up to inf)
    return uint16_t(sign | h);
  }
};

struct BFloat16 {
  uint16_t bits;
  BFloat16() = default;
  BFloat16(float f) {  // NOLINT: implicit, as c10::BFloat16
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
      bits = uint16_t((x >> 16) | 0x40u);  // quiet NaN
    } else {
      bits = uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
    }
  }
  operator float() const {  // NOLINT
    const uint32_t x = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
};

}  // namespace emu
