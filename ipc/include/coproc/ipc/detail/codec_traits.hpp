#pragma once
// Classification of types for the codec: which wire shape a type takes, and, for a type
// that cannot cross a process boundary, the reason (so encode/decode can static_assert
// with a message that names the problem instead of a wall of template errors).

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "coproc/ipc/detail/codec_cereal.hpp"

namespace coproc::detail {

/// The wire shape of a type.
enum class codec_kind {
  refused,       ///< cannot cross; see codec_refusal
  boolean,       ///< one byte, 0 or 1
  blittable,     ///< sizeof(T) bytes, copied as a block
  string,        ///< u64 count + count * sizeof(CharT)
  block_vector,  ///< std::vector of blittable T: u64 count + one block
  vector_bool,   ///< u64 bit count + packed bytes
  vector,        ///< u64 count + each element
  array,         ///< std::array of non-blittable T: each element
  optional,      ///< u8 engaged flag (0 or 1) + value
  variant,       ///< u32 index (checked) + alternative
  tuple,         ///< each element in order (std::tuple, std::pair)
  monostate,     ///< nothing
  map,           ///< u64 count + key, value pairs (std::map, std::unordered_map)
  set,           ///< u64 count + keys (std::set, std::unordered_set)
  cereal,        ///< u64 byte count + the user's cereal serialization
};

/// Why a type cannot cross a process boundary.
enum class codec_refusal {
  none,
  raw_pointer,
  member_pointer,
  reference,
  span,
  string_view,
  reference_wrapper,
  c_array,
  volatile_type,
  zero_size_element,
  not_serializable,
};

template <class T, template <class...> class Tmpl>
inline constexpr bool is_specialization_v = false;
template <template <class...> class Tmpl, class... Args>
inline constexpr bool is_specialization_v<Tmpl<Args...>, Tmpl> = true;

template <class T>
inline constexpr bool is_std_array_v = false;
template <class T, std::size_t N>
inline constexpr bool is_std_array_v<std::array<T, N>> = true;

template <class T>
inline constexpr bool is_std_span_v = false;
template <class T, std::size_t N>
inline constexpr bool is_std_span_v<std::span<T, N>> = true;

template <class T>
inline constexpr bool is_std_vector_v = false;
template <class T, class A>
inline constexpr bool is_std_vector_v<std::vector<T, A>> = true;

template <class T>
inline constexpr bool is_std_string_v = false;
template <class C, class Tr, class A>
inline constexpr bool is_std_string_v<std::basic_string<C, Tr, A>> = true;

template <class T>
inline constexpr bool is_std_string_view_v = false;
template <class C, class Tr>
inline constexpr bool is_std_string_view_v<std::basic_string_view<C, Tr>> = true;

template <class T>
inline constexpr bool is_std_map_v =
    is_specialization_v<T, std::map> || is_specialization_v<T, std::unordered_map>;
template <class T>
inline constexpr bool is_std_set_v =
    is_specialization_v<T, std::set> || is_specialization_v<T, std::unordered_set>;
template <class T>
inline constexpr bool is_std_tuple_like_v =
    is_specialization_v<T, std::tuple> || is_specialization_v<T, std::pair>;

/// A class type with a cereal serialize/save/load function for the codec's archives.
template <class T>
inline constexpr bool has_cereal_functions_v =
    std::is_class_v<T>&&
        cereal::traits::detail::count_output_serializers<T, codec_output_archive>::value != 0;

template <class T>
constexpr codec_kind kind_of();

/// Trivially copyable and safe to copy as raw bytes: no pointer we can see, no bool (whose
/// byte must be validated), no standard wrapper whose invariants the decoder must check.
template <class T>
constexpr bool blittable() {
  if constexpr (!std::is_trivially_copyable_v<T> || std::is_pointer_v<T> ||
                std::is_member_pointer_v<T> || std::is_same_v<T, bool> || std::is_array_v<T> ||
                std::is_volatile_v<T> || is_std_span_v<T> || is_std_string_view_v<T> ||
                is_specialization_v<T, std::optional> || is_specialization_v<T, std::variant> ||
                is_std_tuple_like_v<T> || is_specialization_v<T, std::reference_wrapper> ||
                std::is_same_v<T, std::monostate>) {
    return false;
  } else if constexpr (is_std_array_v<T>) {
    return blittable<typename T::value_type>();
  } else if constexpr (std::is_class_v<T>) {
    // A user type that wrote serialize() asked for it to be used.
    return !has_cereal_functions_v<T>;
  } else {
    return true;
  }
}

/// The smallest number of bytes a value of T encodes to; containers bound their element
/// count by remaining / min_encoded_size so that a corrupt count cannot allocate.
template <class T>
constexpr std::size_t min_encoded_size();

template <class T>
constexpr codec_refusal refusal_of();

template <class... Ts>
constexpr codec_refusal first_refusal() {
  codec_refusal r = codec_refusal::none;
  ((r == codec_refusal::none ? (r = refusal_of<Ts>(), 0) : 0), ...);
  return r;
}

template <class E>
constexpr codec_refusal element_refusal() {
  constexpr codec_refusal r = refusal_of<E>();
  if constexpr (r != codec_refusal::none) {
    return r;
  } else if constexpr (min_encoded_size<E>() == 0) {
    return codec_refusal::zero_size_element;
  } else {
    return codec_refusal::none;
  }
}

template <class T>
constexpr codec_refusal refusal_of() {
  if constexpr (std::is_reference_v<T>) {
    return codec_refusal::reference;
  } else if constexpr (std::is_volatile_v<T>) {
    return codec_refusal::volatile_type;
  } else if constexpr (std::is_const_v<T>) {
    return refusal_of<std::remove_const_t<T>>();
  } else if constexpr (std::is_pointer_v<T> || std::is_null_pointer_v<T>) {
    return codec_refusal::raw_pointer;
  } else if constexpr (std::is_member_pointer_v<T>) {
    return codec_refusal::member_pointer;
  } else if constexpr (std::is_array_v<T>) {
    constexpr codec_refusal inner = refusal_of<std::remove_all_extents_t<T>>();
    return inner != codec_refusal::none ? inner : codec_refusal::c_array;
  } else if constexpr (is_std_span_v<T>) {
    return codec_refusal::span;
  } else if constexpr (is_std_string_view_v<T>) {
    return codec_refusal::string_view;
  } else if constexpr (is_specialization_v<T, std::reference_wrapper>) {
    return codec_refusal::reference_wrapper;
  } else if constexpr (std::is_same_v<T, bool> || std::is_arithmetic_v<T> || std::is_enum_v<T> ||
                       std::is_same_v<T, std::monostate>) {
    return codec_refusal::none;
  } else if constexpr (is_std_string_v<T>) {
    return refusal_of<typename T::value_type>();
  } else if constexpr (is_std_vector_v<T> || is_std_set_v<T>) {
    return element_refusal<typename T::value_type>();
  } else if constexpr (is_std_map_v<T>) {
    constexpr codec_refusal r = first_refusal<typename T::key_type, typename T::mapped_type>();
    if constexpr (r != codec_refusal::none) {
      return r;
    } else if constexpr (min_encoded_size<typename T::key_type>() +
                             min_encoded_size<typename T::mapped_type>() ==
                         0) {
      return codec_refusal::zero_size_element;
    } else {
      return codec_refusal::none;
    }
  } else if constexpr (is_std_array_v<T> || is_specialization_v<T, std::optional>) {
    return refusal_of<typename T::value_type>();
  } else if constexpr (is_specialization_v<T, std::variant>) {
    return []<class... Ts>(std::type_identity<std::variant<Ts...>>) {
      return first_refusal<Ts...>();
    }(std::type_identity<T>{});
  } else if constexpr (is_specialization_v<T, std::tuple>) {
    return []<class... Ts>(std::type_identity<std::tuple<Ts...>>) {
      return first_refusal<Ts...>();
    }(std::type_identity<T>{});
  } else if constexpr (is_specialization_v<T, std::pair>) {
    return first_refusal<typename T::first_type, typename T::second_type>();
  } else if constexpr (is_specialization_v<T, std::chrono::duration>) {
    return refusal_of<typename T::rep>();
  } else if constexpr (has_cereal_functions_v<T> || std::is_trivially_copyable_v<T>) {
    return codec_refusal::none;
  } else {
    return codec_refusal::not_serializable;
  }
}

template <class T>
constexpr codec_kind kind_of() {
  using U = std::remove_cv_t<T>;
  if constexpr (refusal_of<T>() != codec_refusal::none) {
    return codec_kind::refused;
  } else if constexpr (std::is_same_v<U, bool>) {
    return codec_kind::boolean;
  } else if constexpr (std::is_same_v<U, std::monostate>) {
    return codec_kind::monostate;
  } else if constexpr (is_std_string_v<U>) {
    return codec_kind::string;
  } else if constexpr (is_std_vector_v<U>) {
    if constexpr (std::is_same_v<typename U::value_type, bool>) {
      return codec_kind::vector_bool;
    } else if constexpr (blittable<typename U::value_type>()) {
      return codec_kind::block_vector;
    } else {
      return codec_kind::vector;
    }
  } else if constexpr (is_specialization_v<U, std::optional>) {
    return codec_kind::optional;
  } else if constexpr (is_specialization_v<U, std::variant>) {
    return codec_kind::variant;
  } else if constexpr (is_std_tuple_like_v<U>) {
    return codec_kind::tuple;
  } else if constexpr (is_std_map_v<U>) {
    return codec_kind::map;
  } else if constexpr (is_std_set_v<U>) {
    return codec_kind::set;
  } else if constexpr (blittable<U>()) {
    return codec_kind::blittable;
  } else if constexpr (is_std_array_v<U>) {
    return codec_kind::array;
  } else if constexpr (is_specialization_v<U, std::chrono::duration>) {
    return codec_kind::blittable;  // a duration of a non-trivial rep: not reached in practice
  } else {
    return codec_kind::cereal;
  }
}

template <class T>
constexpr std::size_t min_encoded_size() {
  using U = std::remove_cv_t<T>;
  constexpr codec_kind k = kind_of<U>();
  if constexpr (k == codec_kind::boolean || k == codec_kind::optional) {
    return 1;
  } else if constexpr (k == codec_kind::blittable) {
    return sizeof(U);
  } else if constexpr (k == codec_kind::string || k == codec_kind::block_vector ||
                       k == codec_kind::vector_bool || k == codec_kind::vector ||
                       k == codec_kind::map || k == codec_kind::set || k == codec_kind::cereal) {
    return sizeof(std::uint64_t);
  } else if constexpr (k == codec_kind::variant) {
    return sizeof(std::uint32_t);
  } else if constexpr (k == codec_kind::array) {
    return std::tuple_size_v<U> * min_encoded_size<typename U::value_type>();
  } else if constexpr (k == codec_kind::tuple) {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return (std::size_t{0} + ... + min_encoded_size<std::tuple_element_t<I, U>>());
    }
    (std::make_index_sequence<std::tuple_size_v<U>>{});
  } else {
    return 0;  // monostate, refused
  }
}

/// Fails the build with a message naming why T cannot cross a process boundary.
template <class T>
constexpr void check_codable() {
  constexpr codec_refusal r = refusal_of<T>();
  static_assert(r != codec_refusal::raw_pointer,
                "coproc: raw pointers cannot cross a process boundary; pass the pointed-to value");
  static_assert(r != codec_refusal::member_pointer,
                "coproc: member pointers cannot cross a process boundary");
  static_assert(r != codec_refusal::reference,
                "coproc: references cannot cross a process boundary; pass the value");
  static_assert(r != codec_refusal::span,
                "coproc: std::span views memory of this process and cannot cross a process "
                "boundary; pass a std::vector or std::array");
  static_assert(r != codec_refusal::string_view,
                "coproc: std::string_view views memory of this process and cannot cross a process "
                "boundary; pass a std::string");
  static_assert(r != codec_refusal::reference_wrapper,
                "coproc: std::reference_wrapper refers to memory of this process; pass the value");
  static_assert(r != codec_refusal::c_array,
                "coproc: C arrays cannot be passed or returned by value; use std::array");
  static_assert(r != codec_refusal::volatile_type, "coproc: volatile objects cannot be encoded");
  static_assert(r != codec_refusal::zero_size_element,
                "coproc: a container of elements that encode to zero bytes (std::monostate, "
                "std::tuple<>) cannot be decoded with a bounded size; send the count instead");
  static_assert(r != codec_refusal::not_serializable,
                "coproc: this type is neither trivially copyable nor cereal-serializable; give it "
                "a serialize(Archive&) member or free function (cereal) to let it cross a process "
                "boundary");
}

}  // namespace coproc::detail
