// Crash durability: a child process commits in a loop and acknowledges each commit on a pipe
// only after Transact returned; the parent kill -9s it mid-burst and checks that every
// acknowledged commit is in the reopened database, that no commit is half-applied, and that the
// file passes PRAGMA integrity_check. (kill -9 tests process death; power loss additionally
// relies on synchronous=FULL, which this test cannot simulate.)
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <set>

#include <gtest/gtest.h>

#include "core/file.h"
#include "store/sqlite.h"

namespace moat::store {
namespace {

constexpr Migration kSchema[] = {
    {1, "create_acks",
     "CREATE TABLE acks (id BIGINT PRIMARY KEY, payload BLOB NOT NULL);"
     "CREATE TABLE totals (name TEXT PRIMARY KEY, n BIGINT NOT NULL);"
     "INSERT INTO totals (name, n) VALUES ('acks', 0)"},
};

// The child: commits forever, acknowledging each id after Transact returns. Never returns.
[[noreturn]] void CommitForever(const std::filesystem::path& path, int64_t first_id, int ack_fd) {
  SqliteOptions options;
  options.path = path;
  options.pool_size = 1;
  auto db = OpenSqlite(options, kSchema);
  if (!db) _exit(2);
  // A few pages per commit, so the kill often lands while pages are being written.
  std::vector<uint8_t> payload(6000);
  for (int64_t id = first_id;; ++id) {
    std::memcpy(payload.data(), &id, sizeof id);
    auto r = (*db)->Transact([&](Session& s) -> Result<void> {
      MOAT_TRY(s.Execute("INSERT INTO acks (id, payload) VALUES (?, ?)", {id, payload}));
      MOAT_TRY(s.Execute("UPDATE totals SET n = n + 1 WHERE name = 'acks'"));
      return Ok();
    });
    if (!r) _exit(3);
    if (::write(ack_fd, &id, sizeof id) != sizeof id) _exit(4);
  }
}

std::string IntegrityCheck(const std::filesystem::path& path) {
  sqlite3* db = nullptr;
  std::string out = "cannot open";
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return out;
}

TEST(SqliteCrashTest, AcknowledgedCommitsSurviveKill9) {
  auto dir = TempDir::Create("moat-store-crash");
  ASSERT_TRUE(dir);
  const auto path = dir->path() / "moat.db";
  SqliteOptions options;
  options.path = path;
  ASSERT_TRUE(OpenSqlite(options, kSchema));  // created and migrated; closed again before fork

  int64_t next_id = 0;
  std::set<int64_t> acknowledged;
  // Several rounds: each one recovers the WAL the previous kill left behind, then is killed.
  for (int round = 0; round < 3; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      CommitForever(path, next_id, fds[1]);
    }
    ::close(fds[1]);
    UniqueFd acks(fds[0]);

    // Kill after a number of acknowledgements that varies by round, then drain what the
    // child acknowledged before it died: those count too.
    const size_t kill_after = 150 + 37 * static_cast<size_t>(round);
    size_t received = 0;
    bool killed = false;
    std::vector<uint8_t> pending;
    for (;;) {
      uint8_t buf[512];
      ssize_t n = ::read(acks.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      ASSERT_GE(n, 0) << std::strerror(errno);
      if (n == 0) break;  // the child is gone
      pending.insert(pending.end(), buf, buf + n);
      while (pending.size() >= sizeof(int64_t)) {
        int64_t id;
        std::memcpy(&id, pending.data(), sizeof id);
        pending.erase(pending.begin(), pending.begin() + sizeof id);
        acknowledged.insert(id);
        ++received;
      }
      if (!killed && received >= kill_after) {
        ASSERT_EQ(::kill(pid, SIGKILL), 0);
        killed = true;
      }
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child ended by itself, status " << status << " (exit 2: open, 3: commit, 4: ack)";
    ASSERT_GE(received, kill_after);

    EXPECT_EQ(IntegrityCheck(path), "ok") << "round " << round;
    auto db = OpenSqlite(options, kSchema);
    ASSERT_TRUE(db) << db.error().message();
    auto rows = (*db)->Query("SELECT id FROM acks");
    ASSERT_TRUE(rows) << rows.error().message();
    std::set<int64_t> present;
    for (const Row& row : *rows) present.insert(*row.Int(0));
    for (int64_t id : acknowledged) {
      ASSERT_TRUE(present.contains(id))
          << "acknowledged commit " << id << " lost in round " << round;
    }
    // At most the one commit in flight may have landed without its acknowledgement.
    EXPECT_LE(present.size(), acknowledged.size() + 1);
    // Each commit applied whole: the counter matches the rows.
    auto total = (*db)->QueryOne("SELECT n FROM totals WHERE name = 'acks'");
    ASSERT_TRUE(total) << total.error().message();
    EXPECT_EQ(*total->Int(0), static_cast<int64_t>(present.size()));
    next_id = *present.rbegin() + 1;
    acknowledged = present;  // an unacknowledged commit that landed is part of the past now
  }
}

}  // namespace
}  // namespace moat::store
