#pragma once
// The input ranges map and map_unordered accept, said in <iterator>'s terms:
// what std::ranges::input_range says, without <ranges> (3,500 lines of views
// that every includer of process_pool.hpp paid to parse). std::ranges::begin,
// end and size are <iterator>'s too ([range.access]).

#include <iterator>
#include <utility>

namespace coproc::detail {

template <class R>
using items_iterator_t = decltype(std::ranges::begin(std::declval<R&>()));

/// A range whose iterator is an input iterator, its end a sentinel for it.
template <class R>
concept input_items = requires(R& r) {
  std::ranges::begin(r);
  std::ranges::end(r);
}
&&std::input_iterator<items_iterator_t<R>>&&
    std::sentinel_for<decltype(std::ranges::end(std::declval<R&>())), items_iterator_t<R>>;

/// The value type of an input_items range (std::ranges::range_value_t).
template <class R>
using item_t = std::iter_value_t<items_iterator_t<R>>;

/// A range that knows its size without a walk (std::ranges::sized_range).
template <class R>
concept sized_items = requires(R& r) {
  std::ranges::size(r);
};

}  // namespace coproc::detail
