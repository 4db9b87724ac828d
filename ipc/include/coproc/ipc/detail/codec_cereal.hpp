#pragma once
// The bridge from cereal's serialize/save/load functions to the codec: a pair of
// binary archives that write through the codec's writer (which can also just count,
// for encoded_size) and read through the codec's bounds-checked decoder. cereal's own
// BinaryInputArchive reads from an istream and trusts every size it reads; these do not.

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <cereal/cereal.hpp>
// The standard types a user's serialize() most often touches, so that a member of one of
// them works without the user hunting for cereal's header.
#include <cereal/types/array.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

namespace coproc {
class decoder;
namespace detail {
class writer;

/// cereal output archive over the codec's writer (counting or writing).
class codec_output_archive
    : public cereal::OutputArchive<codec_output_archive, cereal::AllowEmptyClassElision> {
 public:
  explicit codec_output_archive(writer& w)
      : cereal::OutputArchive<codec_output_archive, cereal::AllowEmptyClassElision>(this), w_(w) {}
  /// Appends n raw bytes (defined in codec.hpp, where writer is complete).
  void save_binary(const void* data, std::size_t n);

 private:
  writer& w_;
};

/// cereal input archive over the codec's decoder: every read is bounds-checked and
/// throws std::system_error(coproc::errc::frame_corrupt) past the end.
class codec_input_archive
    : public cereal::InputArchive<codec_input_archive, cereal::AllowEmptyClassElision> {
 public:
  explicit codec_input_archive(decoder& d)
      : cereal::InputArchive<codec_input_archive, cereal::AllowEmptyClassElision>(this), d_(d) {}
  void load_binary(void* data, std::size_t n);
  void load_bool(bool& b);
  /// Reads a container size and refuses one larger than the bytes left.
  std::uint64_t load_size();

 private:
  decoder& d_;
};

}  // namespace detail
}  // namespace coproc

namespace cereal {

template <class T>
requires std::is_arithmetic_v<T>
inline void CEREAL_SAVE_FUNCTION_NAME(coproc::detail::codec_output_archive& ar, const T& t) {
  ar.save_binary(std::addressof(t), sizeof(t));
}

template <class T>
requires std::is_arithmetic_v<T>
inline void CEREAL_LOAD_FUNCTION_NAME(coproc::detail::codec_input_archive& ar, T& t) {
  if constexpr (std::is_same_v<T, bool>) {
    ar.load_bool(t);
  } else {
    ar.load_binary(std::addressof(t), sizeof(t));
  }
}

template <class Archive, class T>
inline CEREAL_ARCHIVE_RESTRICT(coproc::detail::codec_input_archive,
                               coproc::detail::codec_output_archive)
    CEREAL_SERIALIZE_FUNCTION_NAME(Archive& ar, NameValuePair<T>& t) {
  ar(t.value);
}

template <class T>
inline void CEREAL_SAVE_FUNCTION_NAME(coproc::detail::codec_output_archive& ar,
                                      const SizeTag<T>& t) {
  const auto size = static_cast<std::uint64_t>(t.size);
  ar.save_binary(&size, sizeof(size));
}

template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(coproc::detail::codec_input_archive& ar, SizeTag<T>& t) {
  // cereal resizes its containers to this count before reading the elements: bounding it by
  // the bytes left keeps a corrupt count from turning into a huge allocation.
  t.size = static_cast<std::remove_cvref_t<T>>(ar.load_size());
}

template <class T>
inline void CEREAL_SAVE_FUNCTION_NAME(coproc::detail::codec_output_archive& ar,
                                      const BinaryData<T>& bd) {
  ar.save_binary(bd.data, static_cast<std::size_t>(bd.size));
}

template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(coproc::detail::codec_input_archive& ar, BinaryData<T>& bd) {
  ar.load_binary(bd.data, static_cast<std::size_t>(bd.size));
}

}  // namespace cereal

CEREAL_REGISTER_ARCHIVE(coproc::detail::codec_output_archive)
CEREAL_REGISTER_ARCHIVE(coproc::detail::codec_input_archive)
CEREAL_SETUP_ARCHIVE_TRAITS(coproc::detail::codec_input_archive,
                            coproc::detail::codec_output_archive)
