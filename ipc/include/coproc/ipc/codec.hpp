#pragma once
/// The wire codec: how arguments, results and exceptions cross a process boundary by value.
///
/// Wire format (host byte order: both ends are the same binary on the same machine):
/// - bool: one byte, 0 or 1 (anything else is corrupt); std::optional: a 0/1 byte, then
///   the value; std::variant: a u32 index (checked), then the alternative;
/// - a trivially copyable type (arithmetic, enum, std::chrono::duration, std::array of such,
///   a user struct without serialize()): sizeof(T) bytes, copied as one block;
/// - std::basic_string and std::vector of a block-copied type: a u64 count, then one block;
/// - std::vector of anything else, std::map, std::unordered_map, std::set,
///   std::unordered_set: a u64 count, then each element (each key, then its value);
///   std::vector<bool>: a u64 bit count, then the bits packed 8 to a byte;
/// - std::tuple, std::pair, std::array of non-block types: each element in order;
///   std::monostate: nothing;
/// - a class with cereal serialize()/save()/load(): a u64 byte count, then what cereal
///   writes through coproc's own bounds-checked binary archives.
/// See docs/ARCHITECTURE.md, section "Codec".

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <iterator>
#include <new>
#include <span>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "coproc/ipc/detail/block_copy.hpp"
#include "coproc/ipc/detail/codec_traits.hpp"
#include "coproc/ipc/detail/writer.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc {

/// A type that can cross a process boundary by value (see the wire format above).
/// Raw pointers, references, std::span, std::string_view, std::reference_wrapper, C arrays
/// and classes that are neither trivially copyable nor cereal-serializable are not.
template <class T>
concept codable = detail::refusal_of<T>()
== detail::codec_refusal::none;

/// Befriend this to let the codec default-construct a cereal-serializable type whose
/// default constructor is private (the decoder builds the value, then load()s into it).
struct codec_access {
  template <class T>
  static T construct() {
    return T();
  }
};

namespace detail {

[[noreturn]] void throw_frame_corrupt();

template <class T>
struct codec;

}  // namespace detail

/// A reader over one frame: decode<T>() reads the next value.
///
/// Every read is bounds-checked; truncated or invalid input throws
/// std::system_error(coproc::errc::frame_corrupt), never undefined behaviour, and a length
/// prefix larger than the bytes left is corrupt before anything is allocated for it.
/// Thread safety: distinct objects: safe; shared objects: unsafe.
class decoder {
 public:
  /// @param in the frame; it must outlive the decoder (values are copied out of it).
  explicit decoder(std::span<const std::byte> in) noexcept
      : pos_(in.data()), end_(in.data() + in.size()) {}

  /// Reads the next value of type T.
  /// @throws std::system_error(coproc::errc::frame_corrupt) on truncated or invalid bytes;
  ///         std::bad_alloc; whatever a user's cereal load() throws.
  template <class T>
  T decode();

  /// Bytes not read yet.
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - pos_); }

  /// Copies the next n bytes into dst.
  void read_bytes(void* dst, std::size_t n) {
    if (n > remaining()) {
      detail::throw_frame_corrupt();
    }
    if (n != 0) {
      std::memcpy(dst, pos_, n);
      pos_ += n;
    }
  }

  /// Consumes the next n bytes and returns a view of them.
  std::span<const std::byte> take(std::size_t n) {
    if (n > remaining()) {
      detail::throw_frame_corrupt();
    }
    std::span<const std::byte> out(pos_, n);
    pos_ += n;
    return out;
  }

  /// Reads a trivially copyable value's bytes.
  template <class T>
  T read_raw() {
    static_assert(std::is_trivially_copyable_v<T>);
    std::array<std::byte, sizeof(T)> raw;
    read_bytes(raw.data(), sizeof(T));
    return std::bit_cast<T>(raw);
  }

  /// Reads a u64 element count and refuses one that the bytes left cannot hold when every
  /// element takes at least min_element_size bytes.
  std::uint64_t read_count(std::size_t min_element_size) {
    const auto n = read_raw<std::uint64_t>();
    if (n > remaining() / std::max<std::size_t>(min_element_size, 1)) {
      detail::throw_frame_corrupt();
    }
    return n;
  }

  /// Reads a bool byte: 0 or 1, anything else is corrupt.
  bool read_bool() {
    const auto b = read_raw<std::uint8_t>();
    if (b > 1) {
      detail::throw_frame_corrupt();
    }
    return b == 1;
  }

 private:
  const std::byte* pos_;
  const std::byte* end_;
};

namespace detail {

inline void codec_output_archive::save_binary(const void* data, std::size_t n) {
  w_.write(data, n);
}
inline void codec_input_archive::load_binary(void* data, std::size_t n) {
  d_.read_bytes(data, n);
}
inline void codec_input_archive::load_bool(bool& b) {
  b = d_.read_bool();
}
inline std::uint64_t codec_input_archive::load_size() {
  return d_.read_count(1);
}

template <class T>
std::size_t size_of(const T& value) {
  return codec<std::remove_cv_t<T>>::size(value);
}
template <class T>
void write_value(writer& w, const T& value) {
  codec<std::remove_cv_t<T>>::write(w, value);
}
template <class T>
T read_value(decoder& d) {
  return codec<std::remove_cv_t<T>>::read(d);
}

/// Checked cap for reserve(): never more elements than the bytes left could hold as T.
template <class T>
std::size_t reserve_cap(std::uint64_t n, const decoder& d) {
  return static_cast<std::size_t>(std::min<std::uint64_t>(n, d.remaining() / sizeof(T) + 1));
}

template <class T>
struct codec {
  static constexpr codec_kind kind = kind_of<T>();
  static_assert(kind != codec_kind::refused);

  static std::size_t size(const T& v) {
    if constexpr (kind == codec_kind::boolean) {
      return 1;
    } else if constexpr (kind == codec_kind::blittable) {
      return sizeof(T);
    } else if constexpr (kind == codec_kind::monostate) {
      return 0;
    } else if constexpr (kind == codec_kind::string || kind == codec_kind::block_vector) {
      return sizeof(std::uint64_t) + v.size() * sizeof(typename T::value_type);
    } else if constexpr (kind == codec_kind::vector_bool) {
      return sizeof(std::uint64_t) + (v.size() + 7) / 8;
    } else if constexpr (kind == codec_kind::vector || kind == codec_kind::set ||
                         kind == codec_kind::array) {
      using E = typename T::value_type;
      std::size_t total = kind == codec_kind::array ? 0 : sizeof(std::uint64_t);
      if constexpr (kind_of<E>() == codec_kind::blittable) {
        total += v.size() * sizeof(E);
      } else if constexpr (kind_of<E>() == codec_kind::boolean) {
        total += v.size();
      } else {
        for (const auto& e : v) {
          total += size_of(e);
        }
      }
      return total;
    } else if constexpr (kind == codec_kind::map) {
      std::size_t total = sizeof(std::uint64_t);
      for (const auto& [k, m] : v) {
        total += size_of(k) + size_of(m);
      }
      return total;
    } else if constexpr (kind == codec_kind::optional) {
      return 1 + (v ? size_of(*v) : 0);
    } else if constexpr (kind == codec_kind::variant) {
      return sizeof(std::uint32_t) + std::visit([](const auto& alt) { return size_of(alt); }, v);
    } else if constexpr (kind == codec_kind::tuple) {
      return std::apply([](const auto&... e) { return (std::size_t{0} + ... + size_of(e)); }, v);
    } else {
      static_assert(kind == codec_kind::cereal);
      writer counter;
      {
        codec_output_archive ar(counter);
        ar(v);
      }
      return sizeof(std::uint64_t) + counter.written();
    }
  }

  static void write(writer& w, const T& v) {
    if constexpr (kind == codec_kind::boolean) {
      w.write_raw(static_cast<std::uint8_t>(v ? 1 : 0));
    } else if constexpr (kind == codec_kind::blittable) {
      w.write(std::addressof(v), sizeof(T));
    } else if constexpr (kind == codec_kind::monostate) {
      // nothing: the variant index already says it
    } else if constexpr (kind == codec_kind::string || kind == codec_kind::block_vector) {
      w.write_raw(static_cast<std::uint64_t>(v.size()));
      w.write(v.data(), v.size() * sizeof(typename T::value_type));
    } else if constexpr (kind == codec_kind::vector_bool) {
      w.write_raw(static_cast<std::uint64_t>(v.size()));
      std::array<std::uint8_t, 256> chunk;
      std::size_t filled = 0;
      for (std::size_t i = 0; i < v.size(); i += 8) {
        std::uint8_t byte = 0;
        for (std::size_t bit = 0; bit < 8 && i + bit < v.size(); ++bit) {
          byte |= static_cast<std::uint8_t>(v[i + bit] ? 1U << bit : 0U);
        }
        chunk[filled++] = byte;
        if (filled == chunk.size()) {
          w.write(chunk.data(), filled);
          filled = 0;
        }
      }
      w.write(chunk.data(), filled);
    } else if constexpr (kind == codec_kind::vector || kind == codec_kind::set ||
                         kind == codec_kind::map || kind == codec_kind::array) {
      if constexpr (kind != codec_kind::array) {
        w.write_raw(static_cast<std::uint64_t>(v.size()));
      }
      if constexpr (kind == codec_kind::map) {
        for (const auto& [k, m] : v) {
          write_value(w, k);
          write_value(w, m);
        }
      } else {
        for (const auto& e : v) {
          write_value(w, e);
        }
      }
    } else if constexpr (kind == codec_kind::optional) {
      w.write_raw(static_cast<std::uint8_t>(v ? 1 : 0));
      if (v) {
        write_value(w, *v);
      }
    } else if constexpr (kind == codec_kind::variant) {
      if (v.valueless_by_exception()) {
        throw std::bad_variant_access();
      }
      w.write_raw(static_cast<std::uint32_t>(v.index()));
      std::visit([&w](const auto& alt) { write_value(w, alt); }, v);
    } else if constexpr (kind == codec_kind::tuple) {
      std::apply([&w](const auto&... e) { (write_value(w, e), ...); }, v);
    } else {
      static_assert(kind == codec_kind::cereal);
      // The byte count is patched in afterwards, so cereal runs once per encode.
      std::byte* slot = w.skip(sizeof(std::uint64_t));
      const std::size_t before = w.written();
      {
        codec_output_archive ar(w);
        ar(v);
      }
      const auto length = static_cast<std::uint64_t>(w.written() - before);
      if (slot != nullptr) {
        std::memcpy(slot, &length, sizeof(length));
      }
    }
  }

  static T read(decoder& d) {
    if constexpr (kind == codec_kind::boolean) {
      return d.read_bool();
    } else if constexpr (kind == codec_kind::blittable) {
      return d.read_raw<T>();
    } else if constexpr (kind == codec_kind::monostate) {
      return T{};
    } else if constexpr (kind == codec_kind::string || kind == codec_kind::block_vector) {
      using E = typename T::value_type;
      const auto n = static_cast<std::size_t>(d.read_count(sizeof(E)));
      return make_block<T, E>(d.take(n * sizeof(E)), n);
    } else if constexpr (kind == codec_kind::vector_bool) {
      const auto n = d.read_raw<std::uint64_t>();
      const std::uint64_t bytes = n / 8 + (n % 8 != 0 ? 1 : 0);
      if (bytes > d.remaining()) {
        throw_frame_corrupt();
      }
      const auto packed = d.take(static_cast<std::size_t>(bytes));
      T v(static_cast<std::size_t>(n));
      for (std::size_t i = 0; i < n; ++i) {
        v[i] = ((std::to_integer<unsigned>(packed[i / 8]) >> (i % 8)) & 1U) != 0;
      }
      // Padding bits must be zero: a frame has exactly one valid encoding.
      if (n % 8 != 0 && (std::to_integer<unsigned>(packed[bytes - 1]) >> (n % 8)) != 0) {
        throw_frame_corrupt();
      }
      return v;
    } else if constexpr (kind == codec_kind::vector) {
      using E = typename T::value_type;
      const auto n = d.read_count(min_encoded_size<E>());
      T v;
      v.reserve(reserve_cap<E>(n, d));
      for (std::uint64_t i = 0; i < n; ++i) {
        v.push_back(read_value<E>(d));
      }
      return v;
    } else if constexpr (kind == codec_kind::array) {
      return [&d]<std::size_t... I>(std::index_sequence<I...>) {
        // Braced initialisation evaluates left to right.
        return T{(static_cast<void>(I), read_value<typename T::value_type>(d))...};
      }
      (std::make_index_sequence<std::tuple_size_v<T>>{});
    } else if constexpr (kind == codec_kind::map) {
      using K = typename T::key_type;
      using M = typename T::mapped_type;
      const auto n =
          d.read_count(std::max<std::size_t>(1, min_encoded_size<K>() + min_encoded_size<M>()));
      T v;
      if constexpr (requires { v.reserve(std::size_t{}); }) {
        v.reserve(reserve_cap<typename T::value_type>(n, d));
      }
      for (std::uint64_t i = 0; i < n; ++i) {
        K key = read_value<K>(d);
        M mapped = read_value<M>(d);
        // A repeated key would silently drop a value: the frame is corrupt.
        if (!v.emplace(std::move(key), std::move(mapped)).second) {
          throw_frame_corrupt();
        }
      }
      return v;
    } else if constexpr (kind == codec_kind::set) {
      using K = typename T::key_type;
      const auto n = d.read_count(min_encoded_size<K>());
      T v;
      if constexpr (requires { v.reserve(std::size_t{}); }) {
        v.reserve(reserve_cap<K>(n, d));
      }
      for (std::uint64_t i = 0; i < n; ++i) {
        if (!v.insert(read_value<K>(d)).second) {
          throw_frame_corrupt();
        }
      }
      return v;
    } else if constexpr (kind == codec_kind::optional) {
      if (!d.read_bool()) {
        return T();
      }
      return T(std::in_place, read_value<typename T::value_type>(d));
    } else if constexpr (kind == codec_kind::variant) {
      const auto index = d.read_raw<std::uint32_t>();
      if (index >= std::variant_size_v<T>) {
        throw_frame_corrupt();
      }
      return [&d, index ]<std::size_t... I>(std::index_sequence<I...>) {
        using reader = T (*)(decoder&);
        static constexpr reader table[] = {+[](decoder& dd) {
          return T(std::in_place_index<I>, read_value<std::variant_alternative_t<I, T>>(dd));
        }...};
        return table[index](d);
      }
      (std::make_index_sequence<std::variant_size_v<T>>{});
    } else if constexpr (kind == codec_kind::tuple) {
      return [&d]<std::size_t... I>(std::index_sequence<I...>) {
        return T{read_value<std::tuple_element_t<I, T>>(d)...};
      }
      (std::make_index_sequence<std::tuple_size_v<T>>{});
    } else {
      static_assert(kind == codec_kind::cereal);
      const auto n = static_cast<std::size_t>(d.read_count(1));
      decoder sub(d.take(n));
      T v = codec_access::construct<T>();
      try {
        codec_input_archive ar(sub);
        ar(v);
      } catch (const cereal::Exception&) {
        // cereal's own validation (e.g. a variant index) failed on our bytes.
        throw_frame_corrupt();
      }
      if (sub.remaining() != 0) {
        throw_frame_corrupt();
      }
      return v;
    }
  }
};

}  // namespace detail

template <class T>
T decoder::decode() {
  detail::check_codable<T>();
  if constexpr (codable<T>) {
    return detail::read_value<std::remove_cv_t<T>>(*this);
  } else {
    std::terminate();  // not reached: check_codable failed the build
  }
}

/// Exact number of bytes encode() writes for the values, in order.
/// Linear in the number of elements for non-block containers; O(1) for block-copied ones;
/// runs a cereal type's serialization once in counting mode.
/// @throws whatever a user's cereal save() throws.
template <class... Ts>
std::size_t encoded_size(const Ts&... values) {
  (detail::check_codable<Ts>(), ...);
  if constexpr ((codable<Ts> && ...)) {
    return (std::size_t{0} + ... + detail::size_of(values));
  } else {
    return 0;
  }
}

/// Writes the values into out, one after another.
/// @param out must hold at least encoded_size(values...) bytes.
/// @returns the number of bytes written (== encoded_size(values...)).
/// @throws std::system_error(coproc::errc::frame_too_large) if out is too small;
///         std::bad_variant_access for a valueless variant; whatever a cereal save() throws.
/// Thread safety: reads the values only.
template <class... Ts>
std::size_t encode(std::span<std::byte> out, const Ts&... values) {
  (detail::check_codable<Ts>(), ...);
  if constexpr ((codable<Ts> && ...)) {
    detail::writer w(out);
    (detail::write_value(w, values), ...);
    return w.written();
  } else {
    return 0;
  }
}

/// encode() into a new vector of exactly encoded_size(values...) bytes.
template <class... Ts>
std::vector<std::byte> encode_to_vector(const Ts&... values) {
  std::vector<std::byte> out(encoded_size(values...));
  encode(std::span<std::byte>(out), values...);
  return out;
}

/// Decodes a whole frame as one T; bytes left over after T are corrupt.
/// @throws std::system_error(coproc::errc::frame_corrupt) on truncated, invalid or
///         trailing bytes.
template <class T>
T decode_from(std::span<const std::byte> in) {
  decoder d(in);
  T value = d.decode<T>();
  if (d.remaining() != 0) {
    detail::throw_frame_corrupt();
  }
  return value;
}

}  // namespace coproc
