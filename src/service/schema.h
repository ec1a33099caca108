// The service's database schema as versioned migrations (portable SQL: see docs/store.md).
#pragma once

#include <span>

#include "store/database.h"

namespace moat::service {

std::span<const store::Migration> Migrations();

}  // namespace moat::service
