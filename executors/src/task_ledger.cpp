#include "coproc/executors/detail/task_ledger.hpp"

#include <algorithm>
#include <utility>

#include "coproc/ipc/remote_error.hpp"

namespace coproc::detail {

deliveries::~deliveries() {
  try {
    run(false);
  } catch (...) {
  }
}

void deliveries::settled(task_op* op) {
  op->next_held = nullptr;
  (tail_ != nullptr ? tail_->next_held : head_) = op;
  tail_ = op;
}

void deliveries::run(bool may_run_inline) {
  for (task_op* op : std::exchange(dropped_, {})) {
    op->drop();
  }
  task_op* op = std::exchange(head_, nullptr);
  tail_ = nullptr;
  while (op != nullptr) {
    task_op* next = op->next_held;
    try {
      op->deliver(may_run_inline);
    } catch (...) {
      while (next != nullptr) {
        task_op* after = next->next_held;
        next->deliver(false);
        next = after;
      }
      throw;
    }
    op = next;
  }
  for (auto& f : std::exchange(calls_, {})) {
    f();
  }
}

void task_ledger::accept(task_op* op) {
  if (op->id == 0) {
    op->id = next_id_++;
  }
  op->hold_delivery = true;
  ops_.emplace(op->id, op);
  waiting_.push_back(op);
  admit();
}

void task_ledger::refuse(task_op* op, std::exception_ptr why) {
  op->hold_delivery = true;
  ++stats_.tasks_failed;
  op->fail(std::move(why));
  out_.settled(op);
}

void task_ledger::admit() {
  while (!waiting_.empty() && ops_.size() - waiting_.size() < limit_) {
    queue_.push_back(waiting_.front());
    waiting_.pop_front();
  }
}

void task_ledger::dispatched() {
  queue_.pop_front();
  admit();
}

void task_ledger::requeue(const std::vector<task_op*>& ops) {
  queue_.insert(queue_.begin(), ops.begin(), ops.end());
}

bool task_ledger::withdraw_queued(task_op* op) {
  if (auto q = std::find(queue_.begin(), queue_.end(), op); q != queue_.end()) {
    queue_.erase(q);
    return true;
  }
  if (auto w = std::find(waiting_.begin(), waiting_.end(), op); w != waiting_.end()) {
    waiting_.erase(w);
    return true;
  }
  return false;
}

task_op* task_ledger::find(std::uint64_t id) const {
  auto it = ops_.find(id);
  return it == ops_.end() ? nullptr : it->second;
}

void task_ledger::erase(task_op* op) {
  ops_.erase(op->id);
  admit();
}

std::exception_ptr task_ledger::task_exception(std::span<const std::byte> body) {
  try {
    return to_exception_ptr(decode_from<remote_error>(body));
  } catch (...) {
    return std::current_exception();  // an exception that did not decode
  }
}

void task_ledger::complete(task_op* op, bool value, std::span<const std::byte> body) {
  if (!value) {
    fail(op, task_exception(body));
    return;
  }
  erase(op);
  ++stats_.tasks_completed;
  op->complete(body);
  out_.settled(op);
}

void task_ledger::fail(task_op* op, std::exception_ptr why, ending how) {
  erase(op);
  ++(how == ending::cancelled ? stats_.tasks_cancelled : stats_.tasks_failed);
  op->fail(std::move(why));
  out_.settled(op);
}

std::size_t task_ledger::fail_all(const std::exception_ptr& why) {
  auto all = std::exchange(ops_, {});
  queue_.clear();
  waiting_.clear();
  for (auto& [id, op] : all) {
    ++stats_.tasks_failed;
    op->fail(why);
    out_.settled(op);
  }
  return all.size();
}

void task_ledger::drop_all() {
  for (auto& [id, op] : std::exchange(ops_, {})) {
    out_.dropped(op);
  }
  queue_.clear();
  waiting_.clear();
}

void task_ledger::forget_all() {
  ops_.clear();
  queue_.clear();
  waiting_.clear();
}

}  // namespace coproc::detail
