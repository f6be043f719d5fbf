use salient::ops::{conv2d_relu_forward, Conv2dSpec};
use salient::tensor::Pool;
use salient::Tensor;
use std::time::Instant;
fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (cin, cout, side) = (args[0], args[1], args[2]);
    let x = Tensor::from_shape_fn(vec![250, cin, side, side], |i| ((i[0] + i[2] * 3 + i[3]) % 7) as f32 / 7.0);
    let w = Tensor::from_elem(vec![cout, cin, 3, 3], 0.1);
    let b = Tensor::zeros(vec![cout]);
    let mut pool = Pool::new();
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..50 {
            let y = conv2d_relu_forward(&x, &w, &b, Conv2dSpec::default(), true, &mut pool).unwrap();
            pool.give(y);
        }
        println!("{:.3} ms per call", t.elapsed().as_secs_f64() * 20.0);
    }
}
