// Working memory a thread keeps between calls of a kernel: on the machines we measured, fresh
// pages cost a page fault each on first touch, more than the work on them at small sizes.
#pragma once
#include <cstddef>
#include <vector>

namespace wtc {

// A buffer of at least `bytes` (8-byte aligned) that this thread keeps for `Tag`: each Tag
// (one per call site) has its own, valid until this thread's next call with that Tag.
template <typename Tag>
void* thread_buffer(size_t bytes) {
  thread_local std::vector<double> storage;
  const size_t words = (bytes + sizeof(double) - 1) / sizeof(double);
  if (storage.size() < words) storage.resize(words);
  return storage.data();
}

}  // namespace wtc
