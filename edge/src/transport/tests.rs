use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;

use super::*;

/// A session waiting for its client must not pin a receive buffer: with 100,000 of them, the
/// pool (or the heap) would be spent on sockets with nothing to read.
#[test]
fn a_receive_waiting_for_input_holds_no_buffer_until_data_arrives() {
    run(64, async {
        // One registered buffer: whoever holds it, the next `take` falls back to the heap.
        let pool = Rc::new(BufferPool::register(1, 4096, 1024).expect("register buffers"));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let listener = Listener::from_std(std_listener);
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = listener.accept().await.unwrap();

        let waiting = Rc::new(Cell::new(false));
        let reader = {
            let (pool, waiting) = (pool.clone(), waiting.clone());
            spawn(async move {
                waiting.set(true);
                let (res, buf) = stream.recv_when_ready(|| pool.take()).await;
                (res.unwrap(), buf.is_fixed(), buf.filled().to_vec())
            })
        };
        while !waiting.get() {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        // The reader waits for input: the registered buffer is still in the pool.
        let probe = pool.take();
        assert!(probe.is_fixed(), "a waiting receive took the pool's buffer");
        drop(probe);

        client.write_all(b"EHLO client.test\r\n").unwrap();
        let (n, fixed, data) = reader.await.unwrap();
        assert_eq!(n, 18);
        assert!(
            fixed,
            "with input there, the read takes the registered buffer"
        );
        assert_eq!(data, b"EHLO client.test\r\n");
    });
}
