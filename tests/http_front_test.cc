// The bounded HTTP front (src/server/http_front.h) against hostile and
// malformed clients, over raw sockets on 127.0.0.1: body limits for every
// framing, header limits, total deadlines (slowloris), pipelining, RFC 9112
// framing rules, connection caps and admission.
#include "server/http_front.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace pixseek::server {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The echo handler: "METHOD TARGET BODYSIZE"; /slow sleeps 400 ms first.
FrontResponse Echo(const FrontRequest& req) {
  if (req.target == "/slow") std::this_thread::sleep_for(400ms);
  const std::string body = req.method + " " + req.target + " " + std::to_string(req.body.size());
  return {"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
              std::to_string(body.size()) + "\r\n",
          body};
}

class HttpFrontTest : public ::testing::Test {
 protected:
  void Start(FrontOptions options = {}) {
    options.port = 0;
    front_ = std::make_unique<HttpFront>(options, Echo,
                                         [this](const std::string&, const std::string&, int s) {
                                           refused_.fetch_add(s > 0 ? 1 : 0);
                                         });
    ASSERT_TRUE(front_->Start().ok());
  }
  // Small limits, so that each test stays quick.
  static FrontOptions Small() {
    FrontOptions o;
    o.workers = 2;
    o.max_pending = 4;
    o.max_header_bytes = 4096;
    o.max_headers = 20;
    o.max_body_bytes = 1 << 20;
    o.header_timeout_s = 1;
    o.body_timeout_s = 2;
    o.idle_timeout_s = 2;
    o.max_connections_per_client = 8;
    o.retry_after_s = 3;
    return o;
  }

  int Connect() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(front_->port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
  }

  std::unique_ptr<HttpFront> front_;
  std::atomic<int> refused_{0};
};

bool Send(int fd, const std::string& bytes) {
  return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

struct Answer {
  int status = 0;
  std::string head;
  std::string body;
};

// Reads one response (framed by Content-Length) from `fd`, keeping what
// follows it in `buffer`; status 0 when the connection closed first.
Answer ReadAnswer(int fd, std::string& buffer) {
  Answer a;
  char chunk[65536];
  size_t end;
  while ((end = buffer.find("\r\n\r\n")) == std::string::npos) {
    const ssize_t got = ::recv(fd, chunk, sizeof(chunk), 0);
    if (got <= 0) return a;
    buffer.append(chunk, static_cast<size_t>(got));
  }
  a.head = buffer.substr(0, end + 2);
  a.status = std::stoi(a.head.substr(9, 3));
  size_t length = 0;
  if (auto p = a.head.find("Content-Length: "); p != std::string::npos) {
    length = std::stoul(a.head.substr(p + 16));
  }
  buffer.erase(0, end + 4);
  while (buffer.size() < length) {
    const ssize_t got = ::recv(fd, chunk, sizeof(chunk), 0);
    if (got <= 0) break;
    buffer.append(chunk, static_cast<size_t>(got));
  }
  a.body = buffer.substr(0, length);
  buffer.erase(0, std::min(length, buffer.size()));
  return a;
}

Answer ReadAnswer(int fd) {
  std::string buffer;
  return ReadAnswer(fd, buffer);
}

// True when the peer closed `fd` within `wait` (reads and drops anything).
bool ClosedWithin(int fd, std::chrono::milliseconds wait) {
  const auto deadline = Clock::now() + wait;
  char chunk[4096];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) > 0) {
      const ssize_t got = ::recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (got == 0 || (got < 0 && errno != EAGAIN)) return true;
    }
  }
  return false;
}

long RssKb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  }
  return -1;
}

TEST_F(HttpFrontTest, AnswersAndKeepsConnectionsAlive) {
  Start(Small());
  const int fd = Connect();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Send(fd, "POST /x?y=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"));
    const Answer a = ReadAnswer(fd);
    EXPECT_EQ(a.status, 200);
    EXPECT_EQ(a.body, "POST /x?y=1 3");
    EXPECT_NE(a.head.find("Connection: keep-alive"), std::string::npos) << a.head;
  }
  ::close(fd);
}

// A chunked body is counted while it is read: the answer is 413 once the
// limit is passed, the connection closes, and the server never holds more
// than the limit (the client's 50 MB are refused, not buffered).
TEST_F(HttpFrontTest, ChunkedBodyOverTheLimitIs413WhileReading) {
  Start(Small());
  const long rss_before = RssKb();
  const int fd = Connect();
  ASSERT_TRUE(Send(fd, "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"));
  const std::string chunk = "10000\r\n" + std::string(0x10000, 'x') + "\r\n";
  size_t sent = 0;
  while (sent < (50u << 20) && Send(fd, chunk)) sent += 0x10000;
  const Answer a = ReadAnswer(fd);
  EXPECT_EQ(a.status, 413) << a.head;
  EXPECT_NE(a.body.find("limit"), std::string::npos) << a.body;
  EXPECT_LT(sent, 50u << 20) << "the server kept reading";
  EXPECT_LT(RssKb() - rss_before, 16 * 1024) << "RSS grew by more than 16 MB";
  ::close(fd);
}

TEST_F(HttpFrontTest, ContentLengthOverTheLimitIs413BeforeTheBody) {
  Start(Small());
  const int fd = Connect();
  ASSERT_TRUE(Send(fd, "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 300000000\r\n\r\n"));
  const Answer a = ReadAnswer(fd);
  EXPECT_EQ(a.status, 413);
  EXPECT_TRUE(ClosedWithin(fd, 1000ms));
  ::close(fd);
}

TEST_F(HttpFrontTest, HeaderCountAndSizeAre431) {
  Start(Small());
  std::string many = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 21; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  int fd = Connect();
  ASSERT_TRUE(Send(fd, many + "\r\n"));
  EXPECT_EQ(ReadAnswer(fd).status, 431);
  ::close(fd);
  // A head that never ends: refused once it passes the limit, whatever
  // else is still coming (a million headers).
  fd = Connect();
  ASSERT_TRUE(Send(fd, "GET / HTTP/1.1\r\n"));
  size_t sent = 0;
  const std::string line = "X-A: " + std::string(100, 'a') + "\r\n";
  while (sent < (100u << 20) && Send(fd, line)) sent += line.size();
  EXPECT_EQ(ReadAnswer(fd).status, 431);
  EXPECT_LT(sent, 100u << 20);
  ::close(fd);
}

// Slowloris: connections that send a byte of their head now and then are
// closed when the head's total deadline passes (each byte does not extend
// it), and meanwhile hold no worker: other clients are answered at once.
TEST_F(HttpFrontTest, SlowHeadsAreCutAtTheDeadlineAndStarveNoOne) {
  FrontOptions o = Small();
  o.max_connections_per_client = 64;
  Start(o);
  std::vector<int> slow;
  for (int i = 0; i < 40; ++i) {
    slow.push_back(Connect());
    ASSERT_TRUE(Send(slow.back(), "G"));
  }
  const std::string rest = "ET / HTTP/1.1\r\nHost: h\r\n";
  std::atomic<bool> closed_all{false};
  std::thread trickle([&] {
    for (size_t i = 0; i < rest.size() && !closed_all; ++i) {
      for (int fd : slow) Send(fd, rest.substr(i, 1));
      std::this_thread::sleep_for(100ms);
    }
  });
  // Normal requests meanwhile: answered quickly.
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    const int fd = Connect();
    ASSERT_TRUE(Send(fd, "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"));
    EXPECT_EQ(ReadAnswer(fd).status, 200);
    EXPECT_LT(Clock::now() - start, 200ms);
    ::close(fd);
  }
  // Every slow connection is answered 408 and closed within the 1 s head
  // deadline (plus the 100 ms sweep), though bytes keep coming.
  for (int fd : slow) {
    const Answer a = ReadAnswer(fd);
    EXPECT_EQ(a.status, 408) << a.head;
  }
  closed_all = true;
  trickle.join();
  for (int fd : slow) ::close(fd);
}

TEST_F(HttpFrontTest, PipelinedRequestsAreAnsweredInOrder) {
  Start(Small());
  const int fd = Connect();
  ASSERT_TRUE(Send(fd,
                   "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                   "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
                   "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "3\r\nabc\r\n0\r\n\r\n"
                   "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"
                   "GET /d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
  std::string buffer;
  for (const char* want : {"GET /a 0", "POST /b 2", "POST /c 3", "GET /slow 0", "GET /d 0"}) {
    const Answer a = ReadAnswer(fd, buffer);
    EXPECT_EQ(a.status, 200);
    EXPECT_EQ(a.body, want);
  }
  EXPECT_TRUE(ClosedWithin(fd, 1000ms)) << "Connection: close was not honoured";
  ::close(fd);
}

// RFC 9112's framing rules: what a proxy in front could read otherwise
// (request smuggling) is refused with 400 and the connection closed.
TEST_F(HttpFrontTest, AmbiguousFramingIs400) {
  Start(Small());
  const char* bad[] = {
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
      "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
      "GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n",
      "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
  };
  for (const char* request : bad) {
    SCOPED_TRACE(request);
    const int fd = Connect();
    ASSERT_TRUE(Send(fd, request));
    EXPECT_EQ(ReadAnswer(fd).status, 400);
    EXPECT_TRUE(ClosedWithin(fd, 1000ms));
    ::close(fd);
  }
  // The same value repeated is one length (RFC 9112 section 6.3).
  const int fd = Connect();
  ASSERT_TRUE(Send(fd, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 2\r\n\r\nok"));
  EXPECT_EQ(ReadAnswer(fd).body, "POST / 2");
  ::close(fd);
}

TEST_F(HttpFrontTest, ConnectionsPerClientAreCapped) {
  Start(Small());  // 8 per client
  std::vector<int> held;
  for (int i = 0; i < 8; ++i) held.push_back(Connect());
  const int extra = Connect();
  EXPECT_TRUE(ClosedWithin(extra, 1000ms)) << "a ninth connection was kept";
  ::close(extra);
  // The first eight still work.
  ASSERT_TRUE(Send(held[7], "GET /still HTTP/1.1\r\nHost: h\r\n\r\n"));
  EXPECT_EQ(ReadAnswer(held[7]).body, "GET /still 0");
  for (int fd : held) ::close(fd);
  // Closing them frees the places.
  ASSERT_TRUE(testing::WaitFor([&] { return front_->connections() == 0; }, 5s));
  const int again = Connect();
  ASSERT_TRUE(Send(again, "GET /again HTTP/1.1\r\nHost: h\r\n\r\n"));
  EXPECT_EQ(ReadAnswer(again).status, 200);
  ::close(again);
}

TEST_F(HttpFrontTest, IdleAndSlowBodiesAreClosed) {
  Start(Small());
  const int idle = Connect();
  EXPECT_TRUE(ClosedWithin(idle, 3500ms)) << "an idle connection outlived idle_timeout_s";
  ::close(idle);
  const int slow_body = Connect();
  ASSERT_TRUE(Send(slow_body, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab"));
  const Answer a = ReadAnswer(slow_body);
  EXPECT_EQ(a.status, 408);
  ::close(slow_body);
}

TEST_F(HttpFrontTest, BusyServerAnswers503WithRetryAfter) {
  FrontOptions o = Small();
  o.workers = 1;
  o.max_pending = 1;
  Start(o);
  const int holder = Connect();
  ASSERT_TRUE(Send(holder, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"));
  std::this_thread::sleep_for(100ms);
  const int other = Connect();
  ASSERT_TRUE(Send(other, "GET /other HTTP/1.1\r\nHost: h\r\n\r\n"));
  const Answer busy = ReadAnswer(other);
  EXPECT_EQ(busy.status, 503);
  EXPECT_NE(busy.head.find("Retry-After: 3"), std::string::npos) << busy.head;
  EXPECT_EQ(ReadAnswer(holder).status, 200);
  // The place is free again.
  ASSERT_TRUE(Send(other, "GET /other HTTP/1.1\r\nHost: h\r\n\r\n"));
  EXPECT_EQ(ReadAnswer(other).status, 200);
  ::close(holder);
  ::close(other);
}

TEST_F(HttpFrontTest, HalfClosedAndExpectContinueClientsAreAnswered) {
  Start(Small());
  int fd = Connect();
  ASSERT_TRUE(Send(fd, "POST /h HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz"));
  ::shutdown(fd, SHUT_WR);
  EXPECT_EQ(ReadAnswer(fd).body, "POST /h 1");
  ::close(fd);
  fd = Connect();
  ASSERT_TRUE(Send(fd, "POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                       "Content-Length: 4\r\n\r\n"));
  std::string buffer;
  EXPECT_EQ(ReadAnswer(fd, buffer).status, 100);
  ASSERT_TRUE(Send(fd, "data"));
  EXPECT_EQ(ReadAnswer(fd, buffer).body, "POST /e 4");
  ::close(fd);
}

TEST_F(HttpFrontTest, StopAnswersTheRequestBeingRead) {
  Start(Small());
  const int fd = Connect();
  ASSERT_TRUE(Send(fd, "POST /late HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab"));
  std::this_thread::sleep_for(100ms);
  std::thread stopper([&] { front_->Stop(); });
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(Send(fd, "cd"));
  const Answer a = ReadAnswer(fd);
  EXPECT_EQ(a.body, "POST /late 4");
  EXPECT_NE(a.head.find("Connection: close"), std::string::npos) << a.head;
  stopper.join();
  ::close(fd);
}

}  // namespace
}  // namespace pixseek::server
