// The original documentation's React example, unchanged apart from the import: its hand-written hook is
// replaced by the package's, with the same signature and return value.
import { useRealtime } from '@fluxbase-realtime/react';

interface Product {
  id: number;
  name: string;
  price: number;
}

// Usage
export function ProductList() {
  const { data: products, connected } = useRealtime<Product>(
    'table:public.products',
    localStorage.getItem('token')
  );

  return (
    <div>
      <div>Status: {connected ? 'Connected' : 'Disconnected'}</div>
      {products.map(product => (
        <div key={product.id}>{product.name}</div>
      ))}
    </div>
  );
}
